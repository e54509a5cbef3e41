"""Idempotency keys: the first answer to a caller's key, stored with the change it answers.

The answer is written by ``keep`` inside the transaction of the change itself (a create or
a reply), just before it commits: after a crash at any instant either both are there (a
retry gets the stored answer) or neither is (a retry runs afresh). Nothing is ever "in
progress", so no retry waits or gets a 409 for a request that is not running.

A create on PostgreSQL goes further (``SupportDesk.create_request`` with a ``Keeper``): its
answer is rendered before the write, from the ids it takes first, and stored by the very
statement that creates the request (``kept_cte``), so a keyed create costs the statements
of one without a key.

Two requests with one key at once both run; the one that commits second finds the key
taken when it writes its answer (on PostgreSQL its insert waits for the first to commit),
rolls its change back and answers with the first one's. ``keep`` is one statement: an
insert that replaces an expired answer (older than the TTL) and otherwise leaves the one
there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CTE, Table, bindparam, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from support_requests.domain.clock import now_ms
from support_requests.storage.database import Database, DbConnection
from support_requests.storage.models import IdempotencyRecord

records = cast(Table, IdempotencyRecord.__table__)

SWEEP_EVERY = timedelta(minutes=1)
DONE = "done"
# Written by versions before answers were kept with their change: such a row only says a
# request once started; it is replaced like an expired one.
IN_PROGRESS = "in_progress"

_FIND = select(
    records.c.fingerprint, records.c.status_code, records.c.body, records.c.location
).where(
    records.c.owner == bindparam("owner"),
    records.c.key == bindparam("key"),
    records.c.state == DONE,
    records.c.created_at >= bindparam("live_since"),
)
_SWEEP = delete(records).where(records.c.created_at < bindparam("before"))


_KEPT_COLUMNS = (
    "owner",
    "key",
    "fingerprint",
    "state",
    "status_code",
    "body",
    "location",
    "created_at",
)


def _keep(dialect: Any) -> Any:
    statement = dialect.insert(records).values(
        # Named apart from the columns (``kept_body``): as a CTE this sits beside the
        # create's own ``body`` and ``created_at``.
        {name: bindparam(f"kept_{name}", type_=records.c[name].type) for name in _KEPT_COLUMNS}
    )
    return statement.on_conflict_do_update(
        index_elements=[records.c.owner, records.c.key],
        set_={
            "fingerprint": statement.excluded.fingerprint,
            "state": statement.excluded.state,
            "status_code": statement.excluded.status_code,
            "body": statement.excluded.body,
            "location": statement.excluded.location,
            "created_at": statement.excluded.created_at,
        },
        where=or_(
            records.c.created_at < bindparam("live_since"),
            records.c.state == IN_PROGRESS,
        ),
    ).returning(records.c.key)


_KEEP = {"postgresql": _keep(postgresql), "sqlite": _keep(sqlite)}


def kept_cte() -> CTE:
    """PostgreSQL: ``keep``'s upsert as a CTE named ``kept``, one row when the answer was
    stored and none when the key is taken, for a statement whose writes depend on it."""
    return cast(CTE, _KEEP["postgresql"].cte("kept"))


class KeyTaken(Exception):
    """Another request with this key committed its answer first: roll this one back."""


@dataclass(frozen=True)
class StoredResponse:
    """The first response given under a key."""

    status_code: int
    body: bytes
    location: str | None


@dataclass(frozen=True)
class StoredAnswer:
    """A key's answer, and what the request it answered looked like (its fingerprint)."""

    fingerprint: str
    response: StoredResponse


class IdempotencyStore:
    """Finds and keeps the answers of idempotency keys, per caller."""

    def __init__(self, database: Database, *, ttl_seconds: int = 86_400) -> None:
        self.database = database
        self.ttl = timedelta(seconds=ttl_seconds)
        self._next_sweep = datetime.min

    async def find(self, owner: str, key: str) -> StoredAnswer | None:
        """The answer kept for ``key``, if any (one primary-key read)."""
        parameters = {"owner": owner, "key": key, "live_since": now_ms() - self.ttl}
        async with self.database.reading() as connection:
            row = (await connection.execute(_FIND, parameters)).first()
        if row is None:
            return None
        return StoredAnswer(
            row.fingerprint, StoredResponse(row.status_code, bytes(row.body), row.location)
        )

    async def keep(
        self,
        connection: DbConnection,
        owner: str,
        key: str,
        fingerprint: str,
        response: StoredResponse,
    ) -> None:
        """Write ``response`` as ``key``'s answer in ``connection``'s transaction; ``KeyTaken``
        when a live answer is there already (the caller's transaction must roll back)."""
        await self.sweep(connection)
        dialect = "sqlite" if self.database.is_sqlite else "postgresql"
        kept = await connection.execute(
            _KEEP[dialect], self.keep_parameters(owner, key, fingerprint, response)
        )
        if kept.first() is None:
            raise KeyTaken(key)

    def keep_parameters(
        self, owner: str, key: str, fingerprint: str, response: StoredResponse
    ) -> dict[str, Any]:
        """The parameters of ``keep``'s upsert (and of ``kept_cte``)."""
        now = now_ms()
        return {
            "kept_owner": owner,
            "kept_key": key,
            "kept_fingerprint": fingerprint,
            "kept_state": DONE,
            "kept_status_code": response.status_code,
            "kept_body": response.body,
            "kept_location": response.location,
            "kept_created_at": now,
            "live_since": now - self.ttl,
        }

    async def sweep(self, connection: DbConnection) -> None:
        """Expired answers are dead weight: drop them, at most once a minute a process."""
        now = now_ms()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            await connection.execute(_SWEEP, {"before": now - self.ttl})


@dataclass(frozen=True)
class Keeper:
    """An Idempotency-Key's answer, stored by the change that gives it: ``answer`` renders
    it from the change's result (``RequestRecord``). A change in a transaction calls
    ``before_commit`` last; a PostgreSQL create stores it in its own statement."""

    store: IdempotencyStore
    owner: str
    key: str
    fingerprint: str
    answer: Callable[[Any], StoredResponse]

    async def before_commit(self, connection: DbConnection, record: Any) -> None:
        """Store the answer to ``record`` in ``connection``'s transaction (``KeyTaken``)."""
        await self.store.keep(
            connection, self.owner, self.key, self.fingerprint, self.answer(record)
        )
