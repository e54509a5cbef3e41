"""Delivering webhooks: one rule per test, a real receiver on 127.0.0.1, on both databases.

Each test writes endpoint rows directly and events through ``outbox.enqueue``, runs a
``Worker`` in this process until the receiver and the stored rows show the rule held, and
asserts what arrived (verified with ``standardwebhooks``) and what is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from support_requests.domain.clock import now_ms
from support_requests.domain.webhooks import MESSAGE_CREATED, RETRY_FOR, STATUS_CHANGED
from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.storage.database import STATEMENT_OBSERVERS, Database
from support_requests.storage.deliveries import (
    _CLAIM_PG,
    WORKER_SESSION,
    Claim,
    DeliveryStore,
)
from support_requests.storage.outbox import FAILED, PENDING, SUCCEEDED
from support_requests.webhooks.addresses import Lookup, system_lookup
from support_requests.webhooks.secrets import SecretBox, new_secret
from support_requests.webhooks.worker import Worker
from tests.helpers import SECRET, on_database
from tests.servers import app_in_thread, free_port
from tests.webhook_receiver import (
    Reply,
    add_endpoint,
    always,
    by_attempt,
    certificates,
    enqueue,
    lookup_table,
    receiving,
    request_event,
    stored_deliveries,
    stored_endpoint,
)

KEY = b"k" * 32
METRICS_TOKEN = "delivery-metrics-token"
NOT_IN_THE_TABLE = lookup_table({})


def on_worker_database(
    database_url: str, scenario: Callable[[Database], Any], **options: Any
) -> None:
    """``on_database`` with the worker's connection settings, as ``supportctl worker``
    opens its database."""
    on_database(database_url, scenario, session=WORKER_SESSION, **options)


def make_worker(database: Database, **options: Any) -> Worker:
    """A worker as the tests run it: loopback and http allowed unless said otherwise, quick
    retries, no DNS."""
    settings: dict[str, Any] = {
        "secrets": options.pop("secrets", None),
        "allow_private": options.pop("allow_private", True),
        "allow_http": options.pop("allow_http", True),
        "first_retry_seconds": options.pop("first_retry_seconds", 0.2),
        "lookup": options.pop("lookup", NOT_IN_THE_TABLE),
    }
    settings["secrets"] = settings["secrets"] or SecretBox(KEY)
    return Worker(database, **settings, **options)


async def run_until(worker: Worker, done: Callable[[], bool], *, within: float = 15.0) -> None:
    """Run ``worker`` until ``done()`` holds, then stop it (AssertionError after ``within`` s)."""
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + within
    try:
        while not done():
            if task.done():
                task.result()
                raise AssertionError("the worker stopped on its own")
            if time.monotonic() > deadline:
                raise AssertionError(f"not done within {within} s")
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await task


def one_attempt(database_url: str, db: sa.Engine, **worker_options: Any) -> dict[str, Any]:
    """Enqueue one event, run a worker (``worker_options``) until it made one attempt at it;
    the delivery's row."""

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        worker = make_worker(database, **worker_options)
        await run_until(worker, lambda: stored_deliveries(db)[0]["attempts"] == 1)

    on_worker_database(database_url, scenario)
    [row] = stored_deliveries(db)
    return row


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def receiver_factory(secret: str) -> Iterator[Callable[..., Any]]:
    with ExitStack() as stack:
        yield lambda respond=None: stack.enter_context(receiving(secret, respond))


def settled(db: sa.Engine, count: int, status: str = SUCCEEDED) -> Callable[[], bool]:
    """True once ``count`` deliveries have ``status``."""
    return lambda: sum(row["status"] == status for row in stored_deliveries(db)) >= count


# -- signing ----------------------------------------------------------------------------


def test_a_delivery_is_signed_so_the_standard_webhooks_library_verifies_it(
    database_url: str, db: sa.Engine, secret: str, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    add_endpoint(db, receiver.url + "/hooks", secret, key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(7, comment="hello ünïcode")])
        await run_until(make_worker(database), settled(db, 1))

    on_worker_database(database_url, scenario)

    [arrived] = receiver.received
    [row] = stored_deliveries(db)
    assert arrived.verified
    assert arrived.webhook_id == row["public_id"]
    assert arrived.body == row["body"].encode()
    assert orjson.loads(arrived.body)["data"] == {
        "requestId": 7,
        "customerId": "customer-7",
        "comment": "hello ünïcode",
    }
    assert arrived.headers["content-type"] == "application/json"
    assert arrived.headers["user-agent"].startswith("support-requests-webhooks")
    assert abs(int(arrived.headers["webhook-timestamp"]) - time.time()) < 60
    assert arrived.headers["webhook-signature"].startswith("v1,")
    assert row["status"] == SUCCEEDED
    assert row["attempts"] == 1
    assert row["last_response_status"] == 200
    assert row["last_error"] is None
    assert row["claimed_until"] is None
    assert row["completed_at"] is not None


def test_a_delivery_signed_with_another_secret_does_not_verify(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    """The receiver's check is real: the endpoint's secret differs from the receiver's."""
    receiver = receiver_factory()
    add_endpoint(db, receiver.url, new_secret(), key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        await run_until(make_worker(database), lambda: bool(receiver.received))

    on_worker_database(database_url, scenario)

    [arrived] = receiver.received
    assert not arrived.verified
    [row] = stored_deliveries(db)
    assert row["status"] == PENDING
    assert row["last_response_status"] == 401


# -- retries ----------------------------------------------------------------------------


def test_a_failed_delivery_is_retried_with_the_same_webhook_id_and_backs_off(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(by_attempt([500, 503, 200]))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        await run_until(make_worker(database, first_retry_seconds=0.3), settled(db, 1))

    on_worker_database(database_url, scenario)

    arrivals = receiver.received
    [row] = stored_deliveries(db)
    assert [a.status for a in arrivals] == [500, 503, 200]
    assert {a.webhook_id for a in arrivals} == {row["public_id"]}
    assert len({a.headers["webhook-signature"] for a in arrivals}) >= 1
    first_gap = arrivals[1].at - arrivals[0].at
    second_gap = arrivals[2].at - arrivals[1].at
    assert 0.3 * 0.8 - 0.05 <= first_gap < 2.0  # first_retry, with its jitter
    assert second_gap >= 0.6 * 0.8 - 0.05  # twice as late
    assert row["status"] == SUCCEEDED
    assert row["attempts"] == 3
    assert row["last_response_status"] == 200


def test_a_failed_attempt_records_its_status_and_the_next_attempt(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(always(500))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)
    before = now_ms()

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        worker = make_worker(database, first_retry_seconds=30)
        await run_until(worker, lambda: bool(stored_deliveries(db)[0]["attempts"]))

    on_worker_database(database_url, scenario)

    [row] = stored_deliveries(db)
    assert len(receiver.received) == 1
    assert row["status"] == PENDING
    assert row["attempts"] == 1
    assert row["last_response_status"] == 500
    assert row["last_error"] == "answered 500"
    assert row["claimed_until"] is None
    assert before + timedelta(seconds=24) <= row["next_attempt_at"]
    assert row["next_attempt_at"] <= now_ms() + timedelta(seconds=36)


def test_a_delivery_fails_for_good_once_its_event_is_24_hours_old(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(always(500))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)
    created = now_ms() - RETRY_FOR - timedelta(seconds=1)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)], at=created)
        await run_until(make_worker(database), settled(db, 1, FAILED))

    on_worker_database(database_url, scenario)

    [row] = stored_deliveries(db)
    assert len(receiver.received) == 1
    assert row["status"] == FAILED
    assert row["attempts"] == 1
    assert row["last_response_status"] == 500
    assert row["completed_at"] is not None
    assert row["claimed_until"] is None


def test_the_last_retry_comes_at_the_24_hour_mark(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    """A retry that would fall after 24 hours is moved to the mark; after it, failed."""
    receiver = receiver_factory(always(500))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)
    created = now_ms() - RETRY_FOR + timedelta(seconds=1)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)], at=created)
        worker = make_worker(database, first_retry_seconds=3600)
        await run_until(worker, lambda: stored_deliveries(db)[0]["attempts"] == 1)
        [row] = stored_deliveries(db)
        assert row["status"] == PENDING
        assert row["next_attempt_at"] == created + RETRY_FOR
        await run_until(make_worker(database), settled(db, 1, FAILED))

    on_worker_database(database_url, scenario)

    [row] = stored_deliveries(db)
    assert len(receiver.received) == 2
    assert row["attempts"] == 2
    assert row["status"] == FAILED


# -- 410 ----------------------------------------------------------------------------------


def test_410_fails_the_delivery_and_disables_the_endpoint(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(always(410))
    endpoint_id = add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    async def scenario(database: Database) -> None:
        # Two events of one request: the second waits for the first, which fails for good.
        await enqueue(database, [request_event(1), request_event(1, MESSAGE_CREATED)])
        await run_until(make_worker(database), settled(db, 1, FAILED))
        await asyncio.sleep(0.3)  # time for a (wrong) attempt at the second one

    on_worker_database(database_url, scenario)

    first, second = stored_deliveries(db)
    endpoint = stored_endpoint(db, endpoint_id)
    assert [a.type for a in receiver.received] == ["support_request.created"]
    assert first["status"] == FAILED
    assert first["last_response_status"] == 410
    assert "410" in first["last_error"]
    assert second["status"] == PENDING
    assert second["attempts"] == 0
    assert endpoint["enabled"] is False or endpoint["enabled"] == 0
    assert endpoint["disabled_reason"] == "gone"
    assert endpoint["updated_at"] >= first["created_at"]


# -- ordering and isolation ---------------------------------------------------------------


def test_a_request_s_later_event_waits_until_the_earlier_one_succeeds(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(by_attempt([500, 200]))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1), request_event(1, STATUS_CHANGED)])
        await enqueue(database, [request_event(2)])
        await run_until(make_worker(database, first_retry_seconds=0.4), settled(db, 3))

    on_worker_database(database_url, scenario)

    order = [
        (orjson.loads(a.body)["data"]["requestId"], a.type, a.status) for a in receiver.received
    ]
    one = [entry for entry in order if entry[0] == 1]
    assert one == [
        (1, "support_request.created", 500),
        (1, "support_request.created", 200),
        (1, "support_request.status_changed", 500),
        (1, "support_request.status_changed", 200),
    ]
    # The other request did not wait for request 1's retry.
    assert order.index((2, "support_request.created", 500)) < order.index(
        (1, "support_request.created", 200)
    )
    assert [row["status"] for row in stored_deliveries(db)] == [SUCCEEDED] * 3


def test_a_delivery_held_back_behind_a_retry_leaves_the_worker_asleep_until_that_retry(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    """Nothing is in flight, so nothing frees the later event but the earlier one's retry:
    the worker sleeps until it is due rather than looking again every 50 ms (hours of
    claims for an endpoint that is down), and order holds."""
    receiver = receiver_factory(by_attempt([500, 200]))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)
    seen: list[str] = []

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1), request_event(1, STATUS_CHANGED)])
        worker = make_worker(database, first_retry_seconds=2.0, poll_seconds=60)
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.to_thread(receiver.wait_for, 1)
            await asyncio.sleep(0.2)  # the 500 recorded; the retry 1.6-2.4 s after it
            with watched(seen):
                await asyncio.sleep(1.0)
        finally:
            worker.stop()
            await task
        # The rest, by another worker: the retry, then the later event.
        await run_until(make_worker(database, first_retry_seconds=0.2), settled(db, 2))

    on_worker_database(database_url, scenario)

    rounds = [sql for sql in seen if "AS waiting" in sql]  # _NEXT_DUE, after each claim
    assert len(rounds) <= 1, seen  # one every 50 ms before: about 20
    assert [(a.type, a.status) for a in receiver.received] == [
        ("support_request.created", 500),
        ("support_request.created", 200),
        ("support_request.status_changed", 500),
        ("support_request.status_changed", 200),
    ]
    assert [row["status"] for row in stored_deliveries(db)] == [SUCCEEDED] * 2


def test_a_slow_endpoint_does_not_hold_up_another(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    slow = receiver_factory(always(200, delay=2.0))
    fast = receiver_factory()
    add_endpoint(db, slow.url, slow.secret, key=KEY)
    add_endpoint(db, fast.url, fast.secret, key=KEY)
    fast_done: list[float] = []

    async def scenario(database: Database) -> None:
        started = time.monotonic()
        # 8 requests: each event goes to both endpoints; the slow one takes 2 s an attempt.
        await enqueue(database, [request_event(n) for n in range(8)])

        def fast_all_in() -> bool:
            if len(fast.received) == 8 and not fast_done:
                fast_done.append(time.monotonic() - started)
            return len(fast.received) == 8 and settled(db, 16)()

        await run_until(make_worker(database, concurrency=16, per_endpoint=4), fast_all_in)

    on_worker_database(database_url, scenario)

    # The slow one's 4 slots were all busy for 2 s, and its second round took 2 s more.
    assert fast_done[0] < 1.9, fast_done
    assert len(slow.received) == 8
    assert max(len([a for a in slow.received if a.at <= s.at]) for s in slow.received) == 8
    assert all(row["status"] == SUCCEEDED for row in stored_deliveries(db))


def test_an_endpoint_gets_at_most_per_endpoint_deliveries_at_once(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(always(200, delay=0.3))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)
    in_flight: list[int] = []

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(n) for n in range(9)])
        worker = make_worker(database, concurrency=16, per_endpoint=3)

        def done() -> bool:
            in_flight.append(sum(row["claimed_until"] is not None for row in stored_deliveries(db)))
            return settled(db, 9)()

        await run_until(worker, done)

    on_worker_database(database_url, scenario)

    assert max(in_flight) == 3
    # Three rounds of three, each 0.3 s.
    arrivals = sorted(a.at for a in receiver.received)
    assert arrivals[3] - arrivals[0] >= 0.25
    assert arrivals[6] - arrivals[3] >= 0.25


# -- what the sender refuses to do --------------------------------------------------------


def test_a_redirect_is_not_followed(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    elsewhere = receiver_factory()
    receiver = receiver_factory(lambda _r: Reply(302, headers={"location": elsewhere.url}))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    row = one_attempt(database_url, db, first_retry_seconds=30)
    assert len(receiver.received) == 1
    assert elsewhere.received == []
    assert row["status"] == PENDING
    assert row["last_response_status"] == 302
    assert row["last_error"] == f"redirect to {elsewhere.url} not followed"


def test_a_timeout_counts_as_a_failed_attempt(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(always(200, delay=4.0))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        worker = make_worker(database, timeout=1.0, first_retry_seconds=30)
        started = time.monotonic()
        await run_until(worker, lambda: stored_deliveries(db)[0]["attempts"] == 1)
        assert time.monotonic() - started < 3.5  # not the receiver's 4 s

    on_worker_database(database_url, scenario)

    [row] = stored_deliveries(db)
    assert len(receiver.received) == 1
    assert row["status"] == PENDING
    assert row["last_response_status"] is None
    assert row["last_error"] == "no answer within 1 s"


def test_a_loopback_url_is_never_connected_to_unless_private_addresses_are_allowed(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)  # bypasses the 422 at registration

    row = one_attempt(database_url, db, allow_private=False, first_retry_seconds=30)
    assert receiver.received == []
    assert row["status"] == PENDING  # retried: the switch may be turned on, DNS may change
    assert row["last_response_status"] is None
    assert row["last_error"] == (
        "not sent: the URL host 127.0.0.1 resolves to a refused address: "
        "127.0.0.1 is a loopback address"
    )


def test_a_name_that_resolves_to_a_loopback_address_is_refused(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    port = receiver.url.rsplit(":", 1)[1]
    add_endpoint(db, f"http://rebind.example.test:{port}/", receiver.secret, key=KEY)
    asked: list[str] = []
    lookup = lookup_table({"rebind.example.test": ["93.184.215.14", "127.0.0.1"]}, asked)

    row = one_attempt(database_url, db, allow_private=False, lookup=lookup, first_retry_seconds=30)
    assert asked == ["rebind.example.test"]
    assert receiver.received == []
    assert row["status"] == PENDING
    assert "127.0.0.1 is a loopback address" in row["last_error"]


def test_plain_http_is_refused_at_delivery_unless_allowed(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    row = one_attempt(database_url, db, allow_http=False, first_retry_seconds=30)
    assert receiver.received == []
    assert row["last_error"].startswith("not sent: the URL must be https")


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    port = receiver.url.rsplit(":", 1)[1]
    add_endpoint(db, f"http://hooks.example.test:{port}/in", receiver.secret, key=KEY)
    asked: list[str] = []
    lookup = lookup_table({"hooks.example.test": ["127.0.0.1"]}, asked)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1), request_event(2)])
        await run_until(make_worker(database, lookup=lookup), settled(db, 2))

    on_worker_database(database_url, scenario)

    assert {a.host for a in receiver.received} == {f"hooks.example.test:{port}"}
    assert all(a.verified for a in receiver.received)
    assert asked == ["hooks.example.test"] * 2  # resolved again for every delivery


def test_https_goes_to_the_checked_address_and_verifies_the_certificate_for_the_name(
    database_url: str, db: sa.Engine, secret: str, tmp_path: Path
) -> None:
    tls = certificates(tmp_path, "hooks.example.test")
    with receiving(secret, tls=tls.server) as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        add_endpoint(db, f"https://hooks.example.test:{port}/in", secret, key=KEY)
        # Another name on the same address: the certificate does not name it.
        add_endpoint(db, f"https://other.example.test:{port}/in", secret, key=KEY)
        lookup = lookup_table(
            {"hooks.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]}
        )

        async def scenario(database: Database) -> None:
            await enqueue(database, [request_event(1)])
            worker = make_worker(database, lookup=lookup, verify=tls.client, first_retry_seconds=30)
            await run_until(
                worker, lambda: all(row["attempts"] == 1 for row in stored_deliveries(db))
            )

        on_worker_database(database_url, scenario)

    named, other = stored_deliveries(db)
    [arrived] = receiver.received
    assert arrived.verified
    assert arrived.host == f"hooks.example.test:{port}"
    assert named["status"] == SUCCEEDED
    assert other["status"] == PENDING
    assert "CERTIFICATE_VERIFY_FAILED" in other["last_error"]
    assert "other.example.test" in other["last_error"]


def test_an_unreachable_address_is_a_failed_attempt(database_url: str, db: sa.Engine) -> None:
    add_endpoint(db, f"http://127.0.0.1:{free_port()}/", new_secret(), key=KEY)  # no listener

    row = one_attempt(database_url, db, first_retry_seconds=30)
    assert row["status"] == PENDING
    assert row["last_response_status"] is None
    assert row["last_error"].startswith("could not connect to 127.0.0.1")


# -- leases and stopping ------------------------------------------------------------------


def test_a_worker_stopped_mid_delivery_leaves_it_to_be_retried(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(lambda r: Reply(200, delay=3.0 if r.attempt == 1 else 0))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        first = make_worker(database, shutdown_grace=0.2)
        await run_until(first, lambda: bool(receiver.received))
        [row] = stored_deliveries(db)
        assert row["status"] == PENDING
        assert row["claimed_until"] is None  # released, due again at once
        assert row["attempts"] == 0
        await run_until(make_worker(database), settled(db, 1))

    on_worker_database(database_url, scenario)

    [row] = stored_deliveries(db)
    assert [a.attempt for a in receiver.received] == [1, 2]
    assert row["status"] == SUCCEEDED
    assert row["attempts"] == 1


def test_a_stopping_worker_lets_a_delivery_in_flight_finish_within_the_grace(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory(always(200, delay=0.5))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        await run_until(make_worker(database, shutdown_grace=5), lambda: bool(receiver.received))

    on_worker_database(database_url, scenario)

    [row] = stored_deliveries(db)
    assert len(receiver.received) == 1
    assert row["status"] == SUCCEEDED


def test_a_dead_worker_s_claims_come_back_when_the_lease_ends(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        now = now_ms()
        # A worker claims it and dies (nothing recorded, nothing released).
        [claimed] = (
            await DeliveryStore(database).claim(
                now, now + timedelta(seconds=1), limit=10, per_endpoint=4
            )
        ).deliveries
        again = await DeliveryStore(database).claim(
            now, now + timedelta(seconds=1), limit=10, per_endpoint=4
        )
        assert again.deliveries == []
        started = time.monotonic()
        await run_until(make_worker(database), settled(db, 1))
        assert time.monotonic() - started >= 0.5
        # The dead worker's late result changes nothing.
        assert not await DeliveryStore(database).fail(
            claimed, now_ms(), response_status=500, error="late"
        )

    on_worker_database(database_url, scenario)

    [row] = stored_deliveries(db)
    assert len(receiver.received) == 1
    assert row["status"] == SUCCEEDED
    assert row["last_error"] is None


# -- waking -------------------------------------------------------------------------------


def test_a_sleeping_worker_wakes_when_this_process_enqueues(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)

    async def scenario(database: Database) -> None:
        worker = make_worker(database, poll_seconds=60)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.3)  # asleep: nothing was due
        enqueued = time.monotonic()
        await enqueue(database, [request_event(1)])
        try:
            await asyncio.to_thread(receiver.wait_for, 1)
        finally:
            worker.stop()
            await task
        assert receiver.received, "not woken"
        assert receiver.received[0].at - enqueued < 2

    on_worker_database(database_url, scenario)


def test_the_embedded_worker_of_a_server_delivers(
    database_url: str, db: sa.Engine, tmp_path: Path, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    port = receiver.url.rsplit(":", 1)[1]
    add_endpoint(db, f"http://hooks.example.test:{port}/", receiver.secret, key=KEY)
    settings = Settings(
        database_url=database_url,
        jwt_secret=SECRET.encode(),
        data_dir=tmp_path,
        secret_key=KEY,
        webhook_allow_private=True,
        webhook_allow_http=True,
        embedded_worker=True,
    )
    lookup: Lookup = lookup_table({"hooks.example.test": ["127.0.0.1"]})
    app = create_app(settings, lookup=lookup)

    with app_in_thread(app):
        on_worker_database(database_url, lambda database: _enqueue_one(database))
        receiver.wait_for(1)
        deadline = time.monotonic() + 10
        while not settled(db, 1)() and time.monotonic() < deadline:
            time.sleep(0.02)

    [arrived] = receiver.received
    [row] = stored_deliveries(db)
    assert arrived.verified
    assert arrived.host == f"hooks.example.test:{port}"
    assert row["status"] == SUCCEEDED


async def _enqueue_one(database: Database) -> None:
    await enqueue(database, [request_event(1)])


def test_a_delivery_is_counted_in_metrics_and_traced_as_a_span(
    database_url: str, db: sa.Engine, tmp_path: Path, receiver_factory: Any
) -> None:
    """The embedded worker's attempts: support_webhook_deliveries_total by outcome on the
    server's /metrics, and one `webhook.deliver` span each."""
    receiver = receiver_factory(by_attempt([500, 200]))
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)
    settings = Settings(
        database_url=database_url,
        jwt_secret=SECRET.encode(),
        data_dir=tmp_path,
        secret_key=KEY,
        webhook_allow_private=True,
        webhook_allow_http=True,
        webhook_first_retry_seconds=0.05,
        embedded_worker=True,
        metrics_token=METRICS_TOKEN,
    )
    exporter = InMemorySpanExporter()
    app = create_app(settings, span_processor=SimpleSpanProcessor(exporter))
    scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    with app_in_thread(app) as url:
        before = _deliveries_by_outcome(httpx.get(f"{url}/metrics", headers=scrape).text)
        on_worker_database(database_url, lambda database: _enqueue_one(database))
        receiver.wait_for(2)
        deadline = time.monotonic() + 10
        while not settled(db, 1)() and time.monotonic() < deadline:
            time.sleep(0.02)
        after = _deliveries_by_outcome(httpx.get(f"{url}/metrics", headers=scrape).text)
    assert after["succeeded"] - before.get("succeeded", 0) == 1
    assert after["retry"] - before.get("retry", 0) == 1
    spans = [span for span in exporter.get_finished_spans() if span.name == "webhook.deliver"]
    assert [dict(span.attributes or {})["support.attempt"] for span in spans] == [1, 2]
    assert {dict(span.attributes or {})["support.webhook_id"] for span in spans} == {
        received.webhook_id for received in receiver.received
    }


def _deliveries_by_outcome(text: str) -> dict[str, float]:
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "support_webhook_deliveries_total"
    }


def test_no_worker_runs_in_a_server_without_the_switch(
    database_url: str, db: sa.Engine, tmp_path: Path, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)
    settings = Settings(
        database_url=database_url,
        jwt_secret=SECRET.encode(),
        data_dir=tmp_path,
        secret_key=KEY,
        webhook_allow_private=True,
        webhook_allow_http=True,
        embedded_worker=False,
    )
    with app_in_thread(create_app(settings, lookup=system_lookup)):
        on_worker_database(database_url, lambda database: _enqueue_one(database))
        time.sleep(1.5)

    assert receiver.received == []
    assert [row["status"] for row in stored_deliveries(db)] == [PENDING]


# -- the claim ----------------------------------------------------------------------------


@contextmanager
def watched(seen: list[str]) -> Iterator[None]:
    """Every statement run meanwhile, its SQL appended to ``seen``."""
    STATEMENT_OBSERVERS.append(lambda sql, _values: seen.append(sql))
    try:
        yield
    finally:
        STATEMENT_OBSERVERS.pop()


async def claim_for_a_minute(database: Database, *, limit: int) -> Claim:
    now = now_ms()
    return await DeliveryStore(database).claim(
        now, now + timedelta(seconds=60), limit=limit, per_endpoint=4
    )


def test_the_claim_is_one_statement_that_locks_only_what_it_takes_skipping_locked_rows(
    database_url: str, db: sa.Engine
) -> None:
    add_endpoint(db, "http://127.0.0.1:9/", new_secret(), key=KEY)
    seen: list[str] = []

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(n) for n in range(3)])
        await DeliveryStore(database).claim(now_ms(), now_ms(), limit=1, per_endpoint=4)  # warm
        with watched(seen):
            claimed = await claim_for_a_minute(database, limit=2)
        assert [delivery.id for delivery in claimed.deliveries] == [1, 2]
        assert claimed.next_due is None  # it took all it was asked for

    on_worker_database(database_url, scenario)

    if database_url.startswith("postgresql"):
        # One statement, atomic by itself: no BEGIN, planner settings or COMMIT around it
        # (the worker's connections start with those settings, WORKER_SESSION). Having taken
        # all it asked for, the worker then looks at the outbox's statistics (once per 5 s).
        statement, *after = seen
        assert len(after) == 1 and "pg_stat_user_tables" in after[0], after
        assert statement.startswith("WITH live AS MATERIALIZED")
        # The partial indexes' predicate in the SQL itself, for the generic plan.
        assert "webhook_deliveries.status = 'pending'" in statement
        assert "UPDATE webhook_deliveries SET claimed_until" in statement
        # One lock, taken on the chosen rows (the outermost subquery), none on the scan.
        assert statement.count("FOR UPDATE") == 1
        assert statement.rstrip().split("FOR UPDATE SKIP LOCKED)")[1].lstrip().startswith("AND")
        assert "RETURNING" in statement and "webhook_endpoints.url" in statement
    else:
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT"
        assert not any("FOR UPDATE" in sql for sql in seen)
    assert [row["claimed_until"] is not None for row in stored_deliveries(db)] == [
        True,
        True,
        False,
    ]


def test_a_claim_that_takes_fewer_than_it_could_reads_what_waits_on_the_same_connection(
    database_url: str, db: sa.Engine
) -> None:
    """The worker sleeps on what the claim says: deliveries due but held back (here the
    second event of a request, behind the first) and the next retry; read right after the
    claim on its connection (PostgreSQL: two statements, no transaction around them;
    SQLite: in the claim's write transaction)."""
    add_endpoint(db, "http://127.0.0.1:9/", new_secret(), key=KEY)
    seen: list[str] = []

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1), request_event(1, STATUS_CHANGED)])
        with watched(seen):
            claim = await claim_for_a_minute(database, limit=4)
        assert [delivery.id for delivery in claim.deliveries] == [1]
        assert claim.next_due == (True, None)

    on_worker_database(database_url, scenario)

    if database_url.startswith("postgresql"):
        claim, waiting = seen
        assert claim.startswith("WITH live AS MATERIALIZED")
        assert "AS waiting" in waiting and claim != waiting
    else:
        # BEGIN, the endpoints with free slots, the endpoint's due deliveries, the lease,
        # the claimed row, what waits, COMMIT.
        assert len(seen) == 7, seen
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT"
        assert "AS waiting" in seen[-2]
    assert [row["claimed_until"] is not None for row in stored_deliveries(db)] == [True, False]


def test_the_claim_is_planned_once_per_connection_and_the_plan_walks_the_due_index(
    database_url: str, db: sa.Engine
) -> None:
    """PostgreSQL: once psycopg has prepared the claim on a connection, every claim there
    runs on one generic plan (no planning per claim), and that plan walks
    ``ix_webhook_deliveries_endpoint_due`` (a plan made for any ``status`` could not use
    it)."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite plans each statement anew; there is nothing prepared")
    add_endpoint(db, "http://127.0.0.1:9/", new_secret(), key=KEY)
    plans: list[Any] = []

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(n) for n in range(40)])
        store = DeliveryStore(database)
        for _ in range(12):
            now = now_ms()  # a lease that has run out: the same rows come back
            ran_out = now - timedelta(milliseconds=1)
            assert (await store.claim(now, ran_out, limit=4, per_endpoint=4)).deliveries
        async with database.writing() as connection:  # the pool's one connection
            [prepared] = (
                await connection.execute(
                    sa.text(
                        "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
                        " WHERE statement LIKE 'WITH live AS MATERIALIZED%'"
                    )
                )
            ).all()
            # EXPLAIN EXECUTE shows the plan the claim runs on: parameters in the order
            # they first appear in the SQL (psycopg numbers them so).
            values = {"now": "now()", "lease_until": "now()", "limit": "4", "per_endpoint": "4"}
            order = dict.fromkeys(re.findall(r"%\((\w+)\)s", _claim_sql(database)))
            arguments = ", ".join(values.get(name, "0") for name in order)
            plan = await connection.execute(
                sa.text(f"EXPLAIN EXECUTE {prepared.name}({arguments})")
            )
            plans.extend([prepared, "\n".join(row[0] for row in plan)])

    on_worker_database(database_url, scenario, pool_size=1)

    prepared, plan = plans
    assert prepared.custom_plans == 0 and prepared.generic_plans >= 5, prepared
    assert "Index Scan using ix_webhook_deliveries_endpoint_due" in plan, plan
    after_the_walk = plan.split("ix_webhook_deliveries_endpoint_due")[-1]
    assert "Seq Scan" not in plan and "Sort Key: webhook_deliveries" not in after_the_walk, plan


def test_a_claim_that_meets_a_backlog_its_statistics_do_not_know_analyzes_the_outbox(
    database_url: str, db: sa.Engine
) -> None:
    """PostgreSQL: a claim that took all it could, on an outbox changed by more rows than
    its statistics know of, ANALYZEs it (so every connection plans the claim again on the
    new statistics); not again within ``STATISTICS_CHECK_SECONDS``, and not after a claim
    that took less than it could (no backlog)."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite plans each statement anew")
    add_endpoint(db, "http://127.0.0.1:9/", new_secret(), key=KEY)
    seen: list[Any] = []

    def analyzed() -> tuple[Any, int]:
        with db.connect() as connection:
            connection.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            row = connection.execute(
                sa.text(
                    "SELECT s.analyze_count, c.reltuples FROM pg_stat_user_tables AS s"
                    " JOIN pg_class AS c ON c.oid = s.relid"
                    " WHERE s.relid = 'webhook_deliveries'::regclass"
                )
            ).one()
        return row.analyze_count, int(row.reltuples)

    async def scenario(database: Database) -> None:
        store = DeliveryStore(database)
        await enqueue(database, [request_event(n) for n in range(1_500)])
        await asyncio.sleep(1.2)  # the enqueue's counts reach the statistics (once a second)
        seen.append(analyzed())
        took = await store.claim(now_ms(), now_ms() + timedelta(minutes=1), limit=4, per_endpoint=4)
        assert len(took.deliveries) == 4
        seen.append(analyzed())
        # A second backlog right away: the worker waits for its next look.
        await enqueue(database, [request_event(n) for n in range(1_500, 4_000)])
        await asyncio.sleep(1.2)
        took = await store.claim(now_ms(), now_ms() + timedelta(minutes=1), limit=4, per_endpoint=8)
        assert len(took.deliveries) == 4
        seen.append(analyzed())
        # Another worker, whose claim is held to fewer than it asked for: no backlog for it.
        other = DeliveryStore(database)
        took = await other.claim(
            now_ms(), now_ms() + timedelta(minutes=1), limit=100, per_endpoint=12
        )
        assert len(took.deliveries) == 4
        seen.append(analyzed())

    on_worker_database(database_url, scenario, pool_size=1)

    (before, _), (after, rows), (again, _), (held, _) = seen
    assert after == before + 1 and rows == 1_500, seen
    assert again == held == after, seen


def test_a_worker_database_starts_every_connection_with_the_worker_settings(
    database_url: str,
) -> None:
    """PostgreSQL: a database opened with ``session=WORKER_SESSION`` (as ``supportctl
    worker`` opens it) plans by index walks and generic plans, commits without waiting for
    the disk and names its connections, on every connection; settings the URL itself gives
    (libpq's ``options``) hold beside them."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has no session settings")
    given = "options=" + quote("-c statement_timeout=4321")
    url = database_url + ("&" if "?" in database_url else "?") + given
    shown: list[dict[str, str]] = []

    async def scenario(database: Database) -> None:
        async with database.reading() as first, database.reading() as second:
            for connection in (first, second):
                values = {}
                for name in [*WORKER_SESSION, "statement_timeout"]:
                    setting = sa.text(f"SELECT current_setting('{name}')")
                    values[name] = (await connection.execute(setting)).scalar()
                shown.append(values)

    on_database(url, scenario, session=WORKER_SESSION)

    assert shown == [{**WORKER_SESSION, "statement_timeout": "4321ms"}] * 2


def _claim_sql(database: Database) -> str:
    return str(_CLAIM_PG.compile(dialect=database.sync_engine.dialect))


def test_successes_finished_together_are_recorded_at_once_each_fenced_by_its_lease(
    database_url: str, db: sa.Engine
) -> None:
    """A batch of successes is one statement on PostgreSQL (the arrays ``unnest``ed, no
    BEGIN or COMMIT around it), one transaction on SQLite; a delivery whose lease is no
    longer this worker's is left as it is."""
    add_endpoint(db, "http://127.0.0.1:9/", new_secret(), key=KEY)
    seen: list[str] = []
    at = now_ms()

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(n) for n in range(3)])
        store = DeliveryStore(database)
        first, second, third = (await claim_for_a_minute(database, limit=3)).deliveries
        lost = dataclasses.replace(third, lease=third.lease - timedelta(seconds=1))
        with watched(seen):
            recorded = await store.succeed_all(
                [(first, at, 200), (second, at, 204), (lost, at, 200)]
            )
        assert recorded == 2

    on_worker_database(database_url, scenario)

    if database_url.startswith("postgresql"):
        [statement] = seen
        assert statement.startswith("UPDATE webhook_deliveries SET") and "unnest(" in statement
    else:
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT"
    rows = stored_deliveries(db)
    assert [
        (row["status"], row["attempts"], row["last_response_status"], row["completed_at"])
        for row in rows
    ] == [(SUCCEEDED, 1, 200, at), (SUCCEEDED, 1, 204, at), (PENDING, 0, None, None)]
    assert [row["claimed_until"] is None for row in rows] == [True, True, False]


def test_a_burst_of_successes_is_recorded_in_one_statement(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    """The first success of a burst waits (``success_window``) for the others: four
    deliveries answered about together are one recording, not one each."""
    receiver = receiver_factory()
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)
    seen: list[str] = []

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(n) for n in range(4)])
        worker = make_worker(database, success_window=0.5)
        with watched(seen):
            await run_until(worker, settled(db, 4))

    on_worker_database(database_url, scenario)

    recordings = [sql for sql in seen if sql.startswith("UPDATE webhook_deliveries SET status")]
    assert len(recordings) == 1, recordings
    assert len(receiver.received) == 4
    assert [row["status"] for row in stored_deliveries(db)] == [SUCCEEDED] * 4


def test_an_endpoint_at_its_limit_with_a_deep_queue_does_not_hold_back_another(
    database_url: str, db: sa.Engine
) -> None:
    """One slow endpoint never holds up the others: with its 4 in flight and 100 more of
    different requests due ahead of another endpoint's one, a claim takes the other's (it
    used to look at the earliest 4 x limit due deliveries of all endpoints, all the slow
    one's, and take none)."""
    slow = add_endpoint(db, "http://127.0.0.1:9/slow", new_secret(), key=KEY)

    async def scenario(database: Database) -> None:
        earlier = now_ms() - timedelta(seconds=5)
        await enqueue(database, [request_event(n) for n in range(100)], earlier)
        in_flight = await claim_for_a_minute(database, limit=16)
        assert {delivery.endpoint_id for delivery in in_flight.deliveries} == {slow}
        assert len(in_flight.deliveries) == 4  # its limit
        other = add_endpoint(db, "http://127.0.0.1:9/other", new_secret(), key=KEY)
        await enqueue(database, [request_event(1000)], endpoint_id=other)
        claim = await claim_for_a_minute(database, limit=16)
        assert [delivery.endpoint_id for delivery in claim.deliveries] == [other]

    on_worker_database(database_url, scenario)

    leased = [row for row in stored_deliveries(db) if row["claimed_until"] is not None]
    assert sorted(row["endpoint_id"] == slow for row in leased) == [False] + [True] * 4


def test_concurrent_claims_never_take_the_same_delivery(database_url: str, db: sa.Engine) -> None:
    add_endpoint(db, "http://127.0.0.1:9/", new_secret(), key=KEY)
    add_endpoint(db, "http://127.0.0.1:9/other", new_secret(), key=KEY)

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(n) for n in range(150)])  # 300 deliveries
        now = now_ms()
        stores = [DeliveryStore(database) for _ in range(12)]
        batches = await asyncio.gather(
            *(
                store.claim(now, now + timedelta(seconds=60), limit=40, per_endpoint=1000)
                for store in stores
            )
        )
        ids = [delivery.id for batch in batches for delivery in batch.deliveries]
        assert len(ids) == len(set(ids))  # no delivery claimed twice
        # Rows one claim skipped while another held them are there for the next claim.
        while more := (
            await stores[0].claim(now, now + timedelta(seconds=60), limit=40, per_endpoint=1000)
        ).deliveries:
            ids += [delivery.id for delivery in more]
        assert sorted(ids) == list(range(1, 301))

    on_worker_database(database_url, scenario)

    assert all(row["claimed_until"] is not None for row in stored_deliveries(db))


def test_a_secret_that_cannot_be_opened_is_a_failed_attempt_without_a_connection(
    database_url: str, db: sa.Engine, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    add_endpoint(db, receiver.url, receiver.secret, key=KEY)  # sealed

    async def scenario(database: Database) -> None:
        await enqueue(database, [request_event(1)])
        worker = make_worker(database, secrets=SecretBox(b"another-key-" + b"x" * 32))
        await run_until(worker, lambda: stored_deliveries(db)[0]["attempts"] == 1)

    on_worker_database(database_url, scenario)

    [row] = stored_deliveries(db)
    assert receiver.received == []
    assert row["status"] == PENDING
    assert row["last_error"] == (
        "not sent: a webhook secret was sealed with another SUPPORT_SECRET_KEY"
    )
