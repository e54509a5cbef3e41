"""The delivery worker: claims due deliveries, sends them concurrently, records how each went.

One loop per worker: claim as many due deliveries as there are free slots (``concurrency``
in all; at most ``per_endpoint`` under a live lease per endpoint, counted in the claim
across every worker, and held by a semaphore per endpoint in this one), send each in its
own task, record the outcome, and sleep until the next retry is due, a wake-up, or
``poll_seconds`` at most (rounds start ``MIN_ROUND_SECONDS`` apart at least). Wake-ups:
on PostgreSQL a notification on ``models.NOTIFY_CHANNEL`` (the deliveries' insert
trigger), received on a connection of the worker's own while the worker is idle (its
last claim left nothing due behind); in this process, ``outbox.on_enqueue`` (the SQLite
server's embedded worker has no other); and a finished delivery (the next one of its
request may be due). A busy worker (its slots full, or due deliveries held back) claims
again as its deliveries finish, so it stops listening until it is idle again: each
notification to a listener costs the committing transaction's PostgreSQL about a third
more CPU (bench/README.md), for a wake-up a busy worker does not need.

Outcomes: a 2xx succeeds; a 410 fails the delivery and disables the endpoint; anything
else (another status, a timeout, a refused or unresolvable address, a connection error)
is retried after ``retry_delay`` (exponential, with jitter, from
``webhook_first_retry_seconds``), the last retry at the 24-hour mark, after which the
delivery fails.

Stopping (``stop()``): no new claims; deliveries in flight get ``shutdown_grace`` seconds
(the send timeout by default) to finish, the rest are cancelled and released (due again
at once, for any worker). A worker that dies without stopping leaves its claims to come
back when their lease (``lease_seconds``, longer than any attempt) runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from support_requests import metrics, tracing
from support_requests.domain.clock import now_ms
from support_requests.domain.webhooks import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_PER_ENDPOINT,
    RETRY_FOR,
    TIMEOUT_SECONDS,
    retry_delay,
)
from support_requests.storage import outbox
from support_requests.storage.database import Database, libpq_url
from support_requests.storage.deliveries import Claim, ClaimedDelivery, DeliveryStore
from support_requests.storage.models import NOTIFY_CHANNEL
from support_requests.webhooks.addresses import Lookup, system_lookup
from support_requests.webhooks.delivery import Message, Outcome, Sender
from support_requests.webhooks.secrets import SecretBox

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from support_requests.handlers.settings import Settings

logger = logging.getLogger("support_requests.webhooks")

# The listening connection's name in ``pg_stat_activity``.
LISTENER_NAME = "support-requests-worker-listener"
# Longest sleep without a wake-up: PostgreSQL's workers are woken by NOTIFY; on SQLite
# this is how deliveries enqueued by another process are found.
POLL_SECONDS_PG = 5.0
POLL_SECONDS_SQLITE = 1.0
# Rounds start at least this far apart: under write load every commit of the API sends a
# notification, and a claim per notification cost the API a third of its write throughput
# on a shared PostgreSQL (bench/README.md). A wake-up that arrives meanwhile is kept (the
# event stays set) and served by the next round, so none is lost; a delivery waits at most
# this much longer.
MIN_ROUND_SECONDS = 0.02
# How soon a worker with nothing in flight looks again when due deliveries are held back
# by others in flight (held by another worker, or earlier ones of their request).
HELD_BACK_SECONDS = 0.05
LISTEN_RETRY_SECONDS = 1.0
# How soon a worker that became busy stops listening (notifications meanwhile wake it, as
# they did before).
LISTEN_CHECK_SECONDS = 0.1
# How long the first success of a burst waits for the others before they are recorded in one
# statement. A round's deliveries to one endpoint are answered about a millisecond apart
# (the receiver takes them in turn), and each success was its own statement and commit:
# 1.1 a statement on average at the defaults (bench/README.md). Shorter than the gap
# between rounds, so a slot is not held up for it.
SUCCESS_WINDOW_SECONDS = 0.005


class _Successes:
    """Successes recorded together: the first of a burst waits ``window`` seconds for the
    others, and while one statement records some, those that finish meanwhile wait
    and go in the next (a commit per delivery would cap the rate, and costs the database
    the API writes to)."""

    def __init__(self, store: DeliveryStore, window: float) -> None:
        self._store = store
        self._window = window
        self._waiting: list[tuple[ClaimedDelivery, datetime, int]] = []
        self._next: asyncio.Future[None] | None = None
        self._writing = False

    async def record(self, delivery: ClaimedDelivery, at: datetime, status: int) -> None:
        """Return once the success is stored (raises what storing raised)."""
        self._waiting.append((delivery, at, status))
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        batch = self._next
        if not self._writing:
            await self._write()
        await asyncio.shield(batch)

    async def _write(self) -> None:
        self._writing = True
        try:
            try:
                await asyncio.sleep(self._window)
            except asyncio.CancelledError:
                if self._next is not None:
                    self._next.cancel()
                    self._next = None
                raise
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                batch, self._next = self._next, None
                assert batch is not None
                try:
                    await self._store.succeed_all(waiting)
                except asyncio.CancelledError:
                    batch.cancel()
                    raise
                except Exception as error:
                    batch.set_exception(error)
                else:
                    batch.set_result(None)
        finally:
            self._writing = False


class Worker:
    """Delivers the outbox of ``database``; ``run()`` until ``stop()``."""

    def __init__(
        self,
        database: Database,
        *,
        secrets: SecretBox,
        allow_private: bool,
        allow_http: bool,
        first_retry_seconds: float,
        lookup: Lookup = system_lookup,
        clock: Callable[[], datetime] = now_ms,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_endpoint: int = DEFAULT_PER_ENDPOINT,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        timeout: float = TIMEOUT_SECONDS,
        shutdown_grace: float | None = None,
        poll_seconds: float | None = None,
        listen_url: str | None = None,
        rng: random.Random | None = None,
        verify: ssl.SSLContext | bool = True,
        tracer: Tracer | None = None,
        success_window: float = SUCCESS_WINDOW_SECONDS,
    ) -> None:
        if lease_seconds <= timeout:
            raise ValueError("the lease must outlast an attempt (lease_seconds > timeout)")
        self._database = database
        self._tracer = tracer
        self._store = DeliveryStore(database)
        self._sender = Sender(
            secrets=secrets,
            allow_private=allow_private,
            allow_http=allow_http,
            lookup=lookup,
            timeout=timeout,
            verify=verify,
        )
        self._first_retry = first_retry_seconds
        self._clock = clock
        self._concurrency = concurrency
        # Claim again once this many slots are free (or none is busy): a claim per finished
        # delivery would cost a database round trip each.
        self._claim_batch = max(1, concurrency // 4)
        self._per_endpoint = per_endpoint
        self._lease = timedelta(seconds=lease_seconds)
        self._grace = timeout if shutdown_grace is None else shutdown_grace
        self._poll = poll_seconds or (
            POLL_SECONDS_SQLITE if database.is_sqlite else POLL_SECONDS_PG
        )
        self._listen_url = None if database.is_sqlite else listen_url
        self._rng = rng or random.Random()
        self._in_flight: dict[int, tuple[ClaimedDelivery, asyncio.Task[None]]] = {}
        self._successes = _Successes(self._store, success_window)
        self._endpoint_slots: dict[str, asyncio.Semaphore] = {}
        self._wake = asyncio.Event()
        # Set while the worker is idle: its listener LISTENs then, and UNLISTENs otherwise.
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.delivered = 0

    @classmethod
    def from_settings(cls, database: Database, settings: Settings, **options: Any) -> Worker:
        """A worker configured by the service's ``Settings``."""
        return cls(
            database,
            secrets=SecretBox(settings.secret_key),
            allow_private=settings.webhook_allow_private,
            allow_http=settings.webhook_allow_http,
            first_retry_seconds=settings.webhook_first_retry_seconds,
            listen_url=settings.database_url,
            **options,
        )

    def wake(self) -> None:
        """Look for due deliveries now (safe from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Stop claiming; ``run()`` returns once the deliveries in flight are settled."""
        self._stopping = True
        self.wake()

    async def run(self) -> None:
        """Deliver until ``stop()``."""
        self._loop = asyncio.get_running_loop()
        unsubscribe = outbox.on_enqueue(self.wake)
        listener = (
            asyncio.create_task(self._listen(self._listen_url))
            if self._listen_url is not None
            else None
        )
        try:
            while not self._stopping:
                # Cleared before the claim: a wake-up from here on means another round.
                self._wake.clear()
                started = time.monotonic()
                delay = await self._round()
                if self._stopping:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                pause = started + MIN_ROUND_SECONDS - time.monotonic()
                if pause > 0 and not self._stopping:
                    await asyncio.sleep(pause)
        finally:
            unsubscribe()
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await self._settle()
            await self._sender.close()

    async def drain(self) -> int:
        """Deliver what is due now, and what falls due meanwhile, until nothing is; the
        number of attempts made (for ``supportctl worker --once`` and tests)."""
        self._loop = asyncio.get_running_loop()
        attempts = 0
        try:
            while True:
                claim = await self._claim()
                started = len(claim.deliveries) if claim else 0
                attempts += started
                if not self._in_flight:
                    if started == 0:
                        return attempts
                    continue
                await asyncio.wait(
                    [task for _, task in self._in_flight.values()],
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            await self._settle()
            await self._sender.close()

    async def _round(self) -> float:
        """One claim; how long to sleep before the next."""
        try:
            claim = await self._claim()
        except SQLAlchemyError as error:
            logger.warning("claiming deliveries failed; retrying", extra=_fields(error=str(error)))
            return min(self._poll, LISTEN_RETRY_SECONDS)
        if claim is None or claim.next_due is None:
            self._idle.clear()
            return self._poll  # every slot taken: a finishing delivery wakes the loop
        due = claim.next_due
        if due.waiting:
            self._idle.clear()  # a finishing delivery, or the short sleep below, looks again
        else:
            self._idle.set()
        if due.waiting and not self._in_flight:
            # Held back by deliveries in flight elsewhere (another worker's, whose ending
            # wakes only that worker): look again soon, so every worker takes a share.
            return HELD_BACK_SECONDS
        if due.next_retry is None:
            return self._poll
        wait = (due.next_retry - self._clock()).total_seconds()
        return min(self._poll, max(0.0, wait))

    async def _claim(self) -> Claim | None:
        """Claim into the free slots and start sending; None when too few are free (the
        deliveries in flight wake the loop as they finish)."""
        free = self._concurrency - len(self._in_flight)
        if self._stopping or (free < self._claim_batch and self._in_flight):
            return None
        now = self._clock()
        claim = await self._store.claim(
            now, now + self._lease, limit=free, per_endpoint=self._per_endpoint
        )
        for delivery in claim.deliveries:
            task = asyncio.create_task(self._deliver(delivery))
            self._in_flight[delivery.id] = (delivery, task)
        return claim

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        slots = self._endpoint_slots.get(delivery.endpoint_id)
        if slots is None:
            slots = self._endpoint_slots[delivery.endpoint_id] = asyncio.Semaphore(
                self._per_endpoint
            )
        started = time.perf_counter()
        try:
            with tracing.span(
                self._tracer,
                "webhook.deliver",
                **{
                    "support.webhook_id": delivery.webhook_id,
                    "support.endpoint_id": delivery.endpoint_id,
                    "support.event_type": delivery.type,
                    "support.attempt": delivery.attempts + 1,
                },
            ):
                async with slots:
                    message = Message(
                        delivery.webhook_id, delivery.body, delivery.url, delivery.stored_secret
                    )
                    outcome = await self._sender.send(message)
                result, recorded = await self._record(delivery, outcome)
            metrics.webhook_deliveries_total.labels(result).inc()
            metrics.webhook_delivery_seconds.observe(time.perf_counter() - started)
            self._log(delivery, outcome, result, recorded, started)
            self._in_flight.pop(delivery.id, None)
        except SQLAlchemyError as error:
            # The lease runs out and another attempt follows: at least once, never lost.
            logger.warning(
                "recording a delivery failed; it is attempted again once its lease ends",
                extra=_fields(deliveryId=delivery.id, error=str(error)),
            )
            self._in_flight.pop(delivery.id, None)
        except Exception:
            logger.exception(
                "a delivery failed unexpectedly; it is attempted again once its lease ends",
                extra=_fields(deliveryId=delivery.id),
            )
            self._in_flight.pop(delivery.id, None)
        finally:
            self.wake()

    async def _record(self, delivery: ClaimedDelivery, outcome: Outcome) -> tuple[str, bool]:
        at = self._clock()
        if outcome.succeeded:
            assert outcome.status is not None
            self.delivered += 1
            await self._successes.record(delivery, at, outcome.status)
            return "succeeded", True
        if outcome.gone:
            return "gone", await self._store.gone(delivery, at, 410)
        give_up_at = delivery.created_at + RETRY_FOR
        if at >= give_up_at:
            recorded = await self._store.fail(
                delivery, at, response_status=outcome.status, error=outcome.error
            )
            return "failed", recorded
        delay = retry_delay(delivery.attempts + 1, self._first_retry, self._rng)
        next_attempt = min(at + timedelta(seconds=delay), give_up_at)
        recorded = await self._store.retry(
            delivery, at, next_attempt, response_status=outcome.status, error=outcome.error
        )
        return "retry", recorded

    def _log(
        self,
        delivery: ClaimedDelivery,
        outcome: Outcome,
        result: str,
        recorded: bool,
        started: float,
    ) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        fields = _fields(
            deliveryId=delivery.id,
            webhookId=delivery.webhook_id,
            endpointId=delivery.endpoint_id,
            eventType=delivery.type,
            attempt=delivery.attempts + 1,
            result=result if recorded else "lease lost: not recorded",
            responseStatus=outcome.status,
            error=outcome.error,
            durationMs=round((time.perf_counter() - started) * 1000, 1),
        )
        logger.info("webhook delivery", extra=fields)

    async def _settle(self) -> None:
        """Let the deliveries in flight finish within the grace; release the rest."""
        if not self._in_flight:
            return
        tasks = [task for _, task in self._in_flight.values()]
        await asyncio.wait(tasks, timeout=self._grace)
        unfinished = [delivery for delivery, task in self._in_flight.values() if not task.done()]
        for _, task in self._in_flight.values():
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left = [delivery for delivery, _ in self._in_flight.values()]
        self._in_flight.clear()
        try:
            await self._store.release(left)
        except SQLAlchemyError as error:
            logger.warning(
                "releasing deliveries failed; they come back when their lease ends",
                extra=_fields(error=str(error)),
            )
        if unfinished:
            logger.info(
                "stopped with deliveries in flight; released for another attempt",
                extra=_fields(released=[delivery.id for delivery in unfinished]),
            )

    async def _listen(self, url: str) -> None:
        """Wake on every notification of new deliveries while idle, on a connection of our
        own."""
        import psycopg

        conninfo = libpq_url(url)
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, application_name=LISTENER_NAME
                )
                async with connection:
                    await self._listen_while_idle(connection)
            except psycopg.Error as error:
                logger.warning(
                    "listening for new deliveries failed; polling until it is back",
                    extra=_fields(error=str(error)),
                )
            await asyncio.sleep(LISTEN_RETRY_SECONDS)

    async def _listen_while_idle(self, connection: Any) -> None:
        """LISTEN while idle, UNLISTEN while busy. A LISTEN is followed by a round, which
        finds anything committed before it (its notification went to no one)."""
        while True:
            await self._idle.wait()
            await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.wake()
            while self._idle.is_set():
                async for _ in connection.notifies(timeout=LISTEN_CHECK_SECONDS):
                    self.wake()
            await connection.execute(f"UNLISTEN {NOTIFY_CHANNEL}")


def _fields(**fields: Any) -> dict[str, Any]:
    """``extra`` for the JSON log formatter (``handlers.observability``)."""
    return {"fields": fields}


@contextlib.asynccontextmanager
async def running_worker(
    database: Database,
    settings: Settings,
    *,
    lookup: Lookup = system_lookup,
    clock: Callable[[], datetime] = now_ms,
    tracer: Tracer | None = None,
) -> AsyncIterator[Worker]:
    """A worker running beside the server in this process (``supportctl serve`` on SQLite),
    stopped gracefully when the block ends."""
    worker = Worker.from_settings(database, settings, lookup=lookup, clock=clock, tracer=tracer)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await task
