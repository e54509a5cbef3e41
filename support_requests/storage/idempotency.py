"""Idempotency keys: the first answer to a caller's key, replayed to its retries.

A key is claimed in its own short transaction before the operation runs, so a
second request with the same key while the first still runs is refused (409)
rather than run twice. A claim whose operation failed is released; one left
behind by a crashed process counts as expired after ``stale_after`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from support_requests.domain.clock import now_ms
from support_requests.storage.database import Database
from support_requests.storage.models import IdempotencyRecord

records = cast(Table, IdempotencyRecord.__table__)

SWEEP_EVERY = timedelta(minutes=1)
IN_PROGRESS = "in_progress"
DONE = "done"

# Built once: the driver compiles a statement once and finds it again by identity. (The
# names of the key's parameters differ from its columns', which an UPDATE's SET takes.)
_THIS_KEY = (records.c.owner == bindparam("of_owner"), records.c.key == bindparam("of_key"))
_SWEEP = delete(records).where(records.c.created_at < bindparam("before"))
_LOCK = select(records).where(*_THIS_KEY).with_for_update()
_DROP = delete(records).where(*_THIS_KEY)
_INSERT = insert(records)
_UPDATE = update(records).where(*_THIS_KEY)
_RELEASE = _DROP.where(records.c.state == IN_PROGRESS)


class KeyReused(Exception):
    """The key was first used with another request."""


class KeyInFlight(Exception):
    """The first request with this key has not finished yet."""


@dataclass(frozen=True)
class StoredResponse:
    """The first response given under a key."""

    status_code: int
    body: bytes
    location: str | None


class IdempotencyStore:
    """Claims, completes and replays idempotency keys per caller."""

    def __init__(
        self, database: Database, *, ttl_seconds: int = 86_400, stale_after: int = 300
    ) -> None:
        self.database = database
        self.ttl = timedelta(seconds=ttl_seconds)
        self.stale_after = timedelta(seconds=stale_after)
        self._next_sweep = datetime.min

    async def claim(self, owner: str, key: str, fingerprint: str) -> StoredResponse | None:
        """None when the caller now holds the key; the stored response for a finished one."""
        now = now_ms()
        async with self.database.writing() as connection:
            if now >= self._next_sweep:
                # Expired keys are dead weight: drop them, at most once a minute a process.
                self._next_sweep = now + SWEEP_EVERY
                await connection.execute(_SWEEP, {"before": now - self.ttl})
            this_key = {"of_owner": owner, "of_key": key}
            row = (await connection.execute(_LOCK, this_key)).first()
            if row is not None and self._expired(row, now):
                await connection.execute(_DROP, this_key)
                row = None
            if row is None:
                try:
                    async with connection.begin_nested():
                        await connection.execute(
                            _INSERT,
                            {
                                "owner": owner,
                                "key": key,
                                "fingerprint": fingerprint,
                                "state": IN_PROGRESS,
                                "created_at": now,
                            },
                        )
                except IntegrityError:
                    raise KeyInFlight(key) from None
                return None
        if row.fingerprint != fingerprint:
            raise KeyReused(key)
        if row.state != DONE:
            raise KeyInFlight(key)
        return StoredResponse(row.status_code, row.body, row.location)

    async def complete(self, owner: str, key: str, response: StoredResponse) -> None:
        """Store the response the key's retries will get."""
        async with self.database.writing() as connection:
            await connection.execute(
                _UPDATE,
                {
                    "of_owner": owner,
                    "of_key": key,
                    "state": DONE,
                    "status_code": response.status_code,
                    "body": response.body,
                    "location": response.location,
                },
            )

    async def release(self, owner: str, key: str) -> None:
        """Give the key up after a failed operation, so that a retry runs it again."""
        async with self.database.writing() as connection:
            await connection.execute(_RELEASE, {"of_owner": owner, "of_key": key})

    def _expired(self, row: Any, now: datetime) -> bool:
        age = now - row.created_at
        return bool(age > self.ttl or (row.state == IN_PROGRESS and age > self.stale_after))
