"""Per-caller request budgets in fixed windows.

On PostgreSQL the counters live in the database, so every server process on
every host draws from the same budget; on SQLite (one box) they live in the
process. A limit reads ``N/second``, ``N/minute`` or ``N/hour``, or ``off``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, delete
from sqlalchemy.dialects import postgresql

from support_requests.storage.database import Database
from support_requests.storage.models import RateLimitCounter

_COUNTERS = cast(Table, RateLimitCounter.__table__)
_INSERT = postgresql.insert(_COUNTERS)
_COUNT = _INSERT.on_conflict_do_update(
    index_elements=[_COUNTERS.c.key, _COUNTERS.c.window_start],
    set_={"count": _COUNTERS.c.count + 1},
).returning(_COUNTERS.c.count)
_SWEEP = delete(_COUNTERS).where(_COUNTERS.c.window_start < bindparam("before"))
_PERIODS = {"second": 1, "minute": 60, "hour": 3600}
_LIMIT = re.compile(r"\s*(\d+)\s*/\s*(second|minute|hour)\s*")


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests per ``period`` seconds."""

    count: int
    period: int

    @classmethod
    def parse(cls, text: str) -> Limit | None:
        """``60/minute`` → Limit(60, 60); ``off`` → None; anything else is a ValueError."""
        if text.strip().lower() == "off":
            return None
        match = _LIMIT.fullmatch(text)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"rate limit {text!r}: write N/second, N/minute, N/hour or off")
        return cls(int(match.group(1)), _PERIODS[match.group(2)])

    def __str__(self) -> str:
        period = {v: k for k, v in _PERIODS.items()}[self.period]
        return f"{self.count}/{period}"


@dataclass(frozen=True)
class Verdict:
    """The caller's standing after counting this request."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


class RateLimiter:
    """Counts requests per (caller, kind) in the current window."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._local: dict[tuple[str, int], int] = {}
        self._last_sweep = 0.0

    async def hit(self, key: str, limit: Limit, now: float | None = None) -> Verdict:
        """Count one request against ``key``'s budget."""
        now = time.time() if now is None else now
        window = int(now // limit.period) * limit.period
        reset = max(1, math.ceil(window + limit.period - now))
        if self.database.is_sqlite:
            count = self._count_locally(key, window)
        else:
            count = await self._count_in_database(key, window, now)
        return Verdict(count <= limit.count, limit.count, max(0, limit.count - count), reset)

    def _count_locally(self, key: str, window: int) -> int:
        stale = [k for k in self._local if k[1] < window] if len(self._local) > 10_000 else []
        for old in stale:
            del self._local[old]
        count = self._local.get((key, window), 0) + 1
        self._local[key, window] = count
        return count

    async def _count_in_database(self, key: str, window: int, now: float) -> int:
        async with self.database.autocommit() as connection:
            count = await connection.scalar(
                _COUNT, {"key": key, "window_start": _utc(window), "count": 1}
            )
            if now - self._last_sweep > 60:
                self._last_sweep = now
                await connection.execute(_SWEEP, {"before": _utc(now - 7200)})
        return int(count)
