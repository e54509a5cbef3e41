"""Per-caller rate limits: 429 with Retry-After and RateLimit-* headers."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import coredis
import pytest
from limits.aio.storage import RedisStorage

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import ConfigurationError, Settings
from support_requests.storage.rate_limits import Limit, RateLimiter, redis_storage_uri
from tests.conftest import REDIS_URL
from tests.helpers import MOBILE, create, customer
from tests.servers import free_port


def _client(settings: Settings, **limits: str):
    return create_app(dataclasses.replace(settings, **limits)).test_client()


def test_reads_over_the_budget_get_429_with_retry_after(settings):
    alice = customer()
    with _client(settings, rate_limit_reads="3/minute") as client:
        remaining = []
        for _ in range(3):
            response = client.get(MOBILE, headers=alice)
            assert response.status_code == 200
            assert response.headers["ratelimit-limit"] == "3"
            remaining.append(response.headers["ratelimit-remaining"])
        refused = client.get(MOBILE, headers=alice)
    assert remaining == ["2", "1", "0"]
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-remaining"] == "0"


def test_a_refused_write_stores_nothing(settings, db):
    alice = customer()
    with _client(settings, rate_limit_writes="1/minute") as client:
        create(client, alice)
        body = {"category": "other", "subject": "Again", "message": "Again"}
        refused = client.post(MOBILE, json=body, headers=alice)
    assert refused.status_code == 429
    with db.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM support_requests").scalar() == 1


def test_reads_and_writes_have_separate_budgets(settings):
    alice = customer()
    with _client(settings, rate_limit_reads="1/minute", rate_limit_writes="5/minute") as client:
        assert client.get(MOBILE, headers=alice).status_code == 200
        assert client.get(MOBILE, headers=alice).status_code == 429
        created = client.post(
            MOBILE, json={"category": "other", "subject": "s", "message": "m"}, headers=alice
        )
    assert created.status_code == 201
    assert created.headers["ratelimit-limit"] == "5"


def test_budgets_are_per_caller(settings):
    with _client(settings, rate_limit_reads="1/minute") as client:
        for _ in range(3):
            assert client.get(MOBILE, headers=customer()).status_code == 200


def test_off_disables_the_limit(settings):
    alice = customer()
    with _client(settings, rate_limit_reads="off") as client:
        for _ in range(20):
            response = client.get(MOBILE, headers=alice)
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers


def test_unauthenticated_requests_are_not_counted(settings):
    alice = customer()
    with _client(settings, rate_limit_reads="1/minute") as client:
        for _ in range(3):
            assert client.get(MOBILE).status_code == 401
        assert client.get(MOBILE, headers=alice).status_code == 200


def test_the_budget_is_shared_by_every_process_with_redis(settings):
    """Two apps (two processes' worth of limiters) on one Redis draw from one budget."""
    alice = customer()
    first = _client(settings, rate_limit_reads="4/minute", redis_url=REDIS_URL)
    second = _client(settings, rate_limit_reads="4/minute", redis_url=REDIS_URL)
    with first as one, second as two:
        answers = [(one if i % 2 else two).get(MOBILE, headers=alice) for i in range(6)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429, 429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["3", "2", "1", "0", "0", "0"]


def test_without_redis_each_process_counts_its_own_budget(settings):
    alice = customer()
    first = _client(settings, rate_limit_reads="2/minute")
    second = _client(settings, rate_limit_reads="2/minute")
    with first as one, second as two:
        statuses = [
            (one if i % 2 else two).get(MOBILE, headers=alice).status_code for i in range(4)
        ]
    assert statuses == [200, 200, 200, 200]


def test_a_redis_outage_fails_open_to_per_process_budgets(settings, caplog):
    """Redis on a dead port: the API answers, each process counts in its own memory, and
    one error line says so."""
    alice = customer()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with _client(settings, rate_limit_reads="3/minute", redis_url=dead) as client:
        statuses = [client.get(MOBILE, headers=alice).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    outage = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(outage) == 1
    assert outage[0].levelname == "ERROR"


def test_a_redis_url_that_is_not_redis_is_refused_at_start(settings):
    with pytest.raises(ConfigurationError, match="redis://"):
        dataclasses.replace(settings, redis_url="http://127.0.0.1:6379")


@pytest.mark.parametrize("text", ["60/fortnight", "ten/minute", "0/minute", "-1/second", ""])
def test_a_malformed_limit_is_refused_at_start(settings, text):
    with pytest.raises(ConfigurationError, match="SUPPORT_RATE_LIMIT_READS"):
        dataclasses.replace(settings, rate_limit_reads=text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60/minute", Limit(60, 60)),
        (" 5 / second ", Limit(5, 1)),
        ("OFF", None),
        ("2/hour", Limit(2, 3600)),
        ("100 per 5 minutes", Limit(100, 300)),
    ],
)
def test_limits_parse_from_their_documented_form(text, expected):
    assert Limit.parse(text) == expected


def _two_limiters() -> tuple[RateLimiter, RateLimiter]:
    return RateLimiter(REDIS_URL), RateLimiter(REDIS_URL)


def test_redis_reservations_hand_each_slot_out_once_across_processes():
    """A large budget: each process reserves runs of slots (few Redis calls), and the
    remaining counts the two hand out never repeat: one budget, nothing counted twice."""
    key = f"reads:{uuid.uuid4().hex}"
    limit = Limit(100_000, 60)
    one, two = _two_limiters()

    async def go() -> list[int]:
        try:
            verdicts = [await (one if i % 3 else two).hit(key, limit, now=30.0) for i in range(600)]
            return [v.remaining for v in verdicts if v.allowed]
        finally:
            one.close()
            two.close()

    remaining = asyncio.run(go())
    assert len(remaining) == 600
    assert len(set(remaining)) == 600
    # Reservations of at most 50 each: Redis counted at most 100 more than were used,
    # in a few dozen calls instead of 600.
    assert 600 <= asyncio.run(_counted(f"{key}:0")) <= 700


def test_a_redis_budget_is_exact_when_every_process_uses_its_reservation():
    key = f"writes:{uuid.uuid4().hex}"
    limit = Limit(250, 60)
    one, two = _two_limiters()

    async def go() -> list[bool]:
        try:
            return [
                (await (one if i % 2 else two).hit(key, limit, now=5.0)).allowed for i in range(400)
            ]
        finally:
            one.close()
            two.close()

    allowed = asyncio.run(go())
    assert sum(allowed) == 250
    assert allowed[:250] == [True] * 250


def test_concurrent_requests_share_one_redis_reservation_at_a_time():
    """200 requests at once in one process: they wait for the reservation in flight instead
    of each reserving a run (which would count 50 slots per request in Redis)."""
    key = f"reads:{uuid.uuid4().hex}"
    limit = Limit(1_000_000, 60)
    limiter = RateLimiter(REDIS_URL)

    async def go() -> list[int]:
        try:
            verdicts = await asyncio.gather(
                *(limiter.hit(key, limit, now=30.0) for _ in range(200))
            )
            return [v.remaining for v in verdicts]
        finally:
            limiter.close()

    remaining = asyncio.run(go())
    assert len(set(remaining)) == 200
    assert 200 <= asyncio.run(_counted(f"{key}:0")) <= 250


async def _counted(counter: str) -> int:
    """What Redis holds for ``counter`` (slots handed out or reserved)."""
    pool = coredis.ConnectionPool.from_url(REDIS_URL)
    try:
        storage = RedisStorage(redis_storage_uri(REDIS_URL), connection_pool=pool)
        return int(await storage.get(counter))
    finally:
        pool.disconnect()
