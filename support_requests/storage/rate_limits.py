"""Per-caller request budgets, counted in a storage of the ``limits`` library.

Two storages, chosen by configuration: ``memory://`` in the process (the default; each
server process has its own budgets), or Redis (``SUPPORT_REDIS_URL``), one budget shared
by every process and host that uses the same URL. ``limits`` parses the limit text and
keeps the counters (its memory storage, or its Redis storage through ``coredis``: one
script that increments and sets the expiry, one round trip).

Windows are fixed and aligned to the clock (the window's number is part of the key), so
the count that one ``incr`` returns is enough for every header: remaining, and seconds to
the reset, with no second call. With Redis, a process reserves runs of slots (one
``incr`` by the run's length) and hands them out itself: a Redis call per request cost
114 µs of CPU, a sixth of a cheap read (measured; docs/operations.md "Rate limits").

Redis unreachable: the limiter fails open to per-process budgets. Each process counts in
its own memory, logs one error line, and tries Redis again after ``RETRY_SHARED_SECONDS``;
the API keeps answering (a Redis outage never takes it down) and a runaway caller is still
held to the per-process budget.

(The counters used to live in PostgreSQL: one row written per request. Measured against
Redis on this machine it cost far more read throughput; see docs/operations.md "Rate
limits", so it was dropped.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import coredis
import limits
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.errors import StorageError

log = logging.getLogger("support_requests.rate_limits")

RETRY_SHARED_SECONDS = 5.0
# Redis budgets: each process reserves slots in runs (see RateLimiter._shared_slot).
RESERVE_DIVISOR = 100
RESERVE_MAX = 50
MAX_RESERVATIONS = 10_000
# Seconds to wait for Redis before counting locally: a blackholed Redis must not hold up
# every request for the client's default timeout.
REDIS_TIMEOUT_SECONDS = 0.25


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests per ``period`` seconds."""

    count: int
    period: int

    @classmethod
    def parse(cls, text: str) -> Limit | None:
        """``60/minute`` → Limit(60, 60); ``off`` → None; anything ``limits`` cannot read,
        or a count below 1, is a ValueError."""
        if text.strip().lower() == "off":
            return None
        try:
            item = limits.parse(text)
        except ValueError:
            item = None
        if item is None or item.amount < 1:
            raise ValueError(
                f"rate limit {text!r}: write N/second, N/minute, N/hour (or N per M minutes) or off"
            )
        return cls(item.amount, item.get_expiry())

    def __str__(self) -> str:
        names = {1: "second", 60: "minute", 3600: "hour"}
        return f"{self.count}/{names.get(self.period, f'{self.period} seconds')}"


@dataclass(frozen=True)
class Verdict:
    """The caller's standing after counting this request."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


@dataclass
class _Reservation:
    """Slots ``next``..``end`` of one counter's window, reserved for this process in Redis
    (``end`` is also the count Redis answered last: everyone's slots up to it are taken)."""

    window: int
    next: int = 1
    end: int = 0
    reserving: asyncio.Lock = field(default_factory=asyncio.Lock)


def redis_storage_uri(url: str) -> str:
    """``limits``' asynchronous Redis URI for a ``redis://`` or ``rediss://`` URL."""
    if url.startswith(("redis://", "rediss://")):
        return "async+" + url
    raise ValueError(f"SUPPORT_REDIS_URL must be a redis:// or rediss:// URL (got {url!r})")


class RateLimiter:
    """Counts requests per key in the current window, in Redis when ``redis_url`` is given
    (falling back to this process's memory while Redis cannot be reached)."""

    def __init__(self, redis_url: str | None = None) -> None:
        self.redis_url = redis_url
        self._local: Storage = MemoryStorage()
        self._shared: Storage | None = None
        self._pool: Any = None
        if redis_url is not None:
            # The connection pool is ours, so that ``close`` can close its connections.
            self._pool = coredis.ConnectionPool.from_url(
                redis_url,
                connect_timeout=REDIS_TIMEOUT_SECONDS,
                stream_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._shared = RedisStorage(
                redis_storage_uri(redis_url),
                wrap_exceptions=True,
                connection_pool=self._pool,
            )
        self._shared_down_until = 0.0
        self._slots: dict[str, _Reservation] = {}

    @property
    def shared(self) -> bool:
        """Whether budgets are counted in Redis right now."""
        return self._shared is not None and time.monotonic() >= self._shared_down_until

    async def hit(self, key: str, limit: Limit, now: float | None = None) -> Verdict:
        """Count one request against ``key``'s budget."""
        now = time.time() if now is None else now
        window = int(now // limit.period)
        reset = max(1, math.ceil((window + 1) * limit.period - now))
        slot = await self._slot(key, window, limit)
        return Verdict(slot <= limit.count, limit.count, max(0, limit.count - slot), reset)

    async def _slot(self, key: str, window: int, limit: Limit) -> int:
        """This request's number in ``key``'s window (1 for the first): within the budget
        when at most ``limit.count``."""
        counter = f"{key}:{window}"
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                return await self._shared_slot(counter, window, limit)
            except (StorageError, OSError, TimeoutError) as error:
                self._shared_down_until = time.monotonic() + RETRY_SHARED_SECONDS
                log.error(
                    "rate limits: Redis at %s cannot be reached (%s); counting in this "
                    "process until it answers again",
                    self.redis_url,
                    error,
                )
        return int(await self._local.incr(counter, limit.period))

    async def _shared_slot(self, counter: str, window: int, limit: Limit) -> int:
        """A slot from this process's reservation, taking the next one from Redis when it
        is used up. A reservation is a run of slots no other process gets (one ``incr`` by
        its size); it is ``1/RESERVE_DIVISOR`` of what is left of the budget, at most
        ``RESERVE_MAX``, so near the end of a budget every request asks Redis (exact), and
        a budget used up is refused here until its window ends."""
        slots = self._slots.get(counter)
        if slots is None:
            if len(self._slots) > MAX_RESERVATIONS:
                self._slots = {k: v for k, v in self._slots.items() if v.window >= window}
            slots = self._slots[counter] = _Reservation(window)
        if slots.next > slots.end:
            # One reservation at a time per counter: requests arriving meanwhile wait for
            # it instead of each asking Redis (and overwriting each other's runs).
            async with slots.reserving:
                if slots.next > slots.end:
                    if slots.end >= limit.count:  # every slot of the window is handed out
                        return slots.end + 1
                    size = max(1, min(RESERVE_MAX, (limit.count - slots.end) // RESERVE_DIVISOR))
                    assert self._shared is not None
                    counted = int(await self._shared.incr(counter, limit.period, amount=size))
                    slots.next, slots.end = counted - size + 1, counted
        slot = slots.next
        slots.next += 1
        return slot

    def close(self) -> None:
        """Close the connections to Redis (the app's shutdown)."""
        if self._pool is not None:
            self._pool.disconnect()

    async def check(self) -> bool:
        """Whether the shared storage answers (True when there is none)."""
        if self._shared is None:
            return True
        try:
            return bool(await self._shared.check())
        except (StorageError, OSError, TimeoutError):
            return False
