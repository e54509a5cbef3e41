"""``GET /api/admin/stats``: the desk's numbers over a window, computed by the database.

Rows are seeded straight into the table with chosen times (the columns the statistics read
are kept by the lifecycle elsewhere), and the answer is held against a plain Python
computation of the same numbers on each backend, and, with PostgreSQL configured, the two
backends against each other.
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support_requests.storage.database import Database, sync_url
from support_requests.storage.models import Base
from support_requests.storage.stats import SupportStatistics, Window
from tests.conftest import PG_URL, reset_pg
from tests.helpers import admin, admin_id_of, assert_problem, customer, error_fields

STATS = "/api/admin/stats"
FROM = datetime(2026, 11, 1)
TO = datetime(2026, 12, 1)
STATUSES = ("open", "in_progress", "resolved", "closed")

requests_table = Base.metadata.tables["support_requests"]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


@dataclass(frozen=True)
class Seeded:
    """One request's times as seeded (naive UTC, whole milliseconds)."""

    status: str
    created_at: datetime
    first_response_at: datetime | None = None
    last_resolved_at: datetime | None = None
    closed_at: datetime | None = None
    rating_score: int | None = None
    rated_at: datetime | None = None


def row(seeded: Seeded, number: int) -> dict[str, Any]:
    return {
        "customer_id": f"customer-{number % 7}",
        "category": "technical",
        "subject": f"Request {number}",
        "status": seeded.status,
        "created_at": seeded.created_at,
        "updated_at": seeded.created_at,
        "version": 1,
        "first_response_at": seeded.first_response_at,
        "last_resolved_at": seeded.last_resolved_at,
        "closed_at": seeded.closed_at,
        "rating_score": seeded.rating_score,
        "rated_at": seeded.rated_at,
    }


def seed(engine: sa.Engine, requests: list[Seeded]) -> None:
    if not requests:
        return
    with engine.begin() as connection:
        connection.execute(
            sa.insert(requests_table), [row(r, n) for n, r in enumerate(requests, start=1)]
        )


def drawn(count: int, *, seed_value: int) -> list[Seeded]:
    """``count`` requests with times around ``[FROM, TO)``: some before, some after, some
    never answered, resolved, closed or rated."""
    rng = random.Random(seed_value)

    def later(moment: datetime, most_ms: int) -> datetime:
        return moment + timedelta(milliseconds=rng.randint(1, most_ms))

    requests = []
    for _ in range(count):
        created = FROM - timedelta(days=10) + timedelta(milliseconds=rng.randint(0, 50 * 86400000))
        status = rng.choice(STATUSES)
        first = later(created, 3 * 86400000) if rng.random() < 0.8 else None
        resolved = later(created, 20 * 86400000) if status in ("resolved", "closed") else None
        closed = later(resolved or created, 5 * 86400000) if status == "closed" else None
        rated = resolved is not None and rng.random() < 0.7
        requests.append(
            Seeded(
                status=status,
                created_at=created,
                first_response_at=first,
                last_resolved_at=resolved,
                closed_at=closed,
                rating_score=rng.randint(1, 5) if rated else None,
                rated_at=later(resolved, 86400000) if rated and resolved else None,
            )
        )
    return requests


# -- the reference: the same numbers, computed plainly in Python --------------------------


def percentile(values: list[float], p: float) -> float | None:
    """PostgreSQL's percentile_cont: sorted, pos = p*(n-1), linear between the neighbours."""
    if not values:
        return None
    ordered = sorted(values)
    position = p * (len(ordered) - 1)
    below = math.floor(position)
    above = math.ceil(position)
    low, high = ordered[below], ordered[above]
    return round(low + (position - below) * (high - low), 3)


def seconds(later: datetime, earlier: datetime) -> float:
    milliseconds = (later - earlier) // timedelta(milliseconds=1)
    return milliseconds / 1000


def expected(requests: list[Seeded], start: datetime, end: datetime) -> dict[str, Any]:
    def inside(moment: datetime | None) -> bool:
        return moment is not None and start <= moment < end

    opened = [r for r in requests if inside(r.created_at)]
    resolved = [r for r in requests if inside(r.last_resolved_at)]
    first = [seconds(r.first_response_at, r.created_at) for r in opened if r.first_response_at]
    resolution = [seconds(r.last_resolved_at, r.created_at) for r in resolved if r.last_resolved_at]
    scores = [r.rating_score for r in requests if inside(r.rated_at) and r.rating_score]
    average = (
        float((Decimal(sum(scores)) / len(scores)).quantize(Decimal("0.01"), ROUND_HALF_UP))
        if scores
        else None
    )
    return {
        "from": iso(start),
        "to": iso(end),
        "opened": len(opened),
        "resolved": len(resolved),
        "closed": sum(1 for r in requests if inside(r.closed_at)),
        "firstResponseSeconds": {"median": percentile(first, 0.5), "p90": percentile(first, 0.9)},
        "resolutionSeconds": {
            "median": percentile(resolution, 0.5),
            "p90": percentile(resolution, 0.9),
        },
        "ratings": {
            "count": len(scores),
            "average": average,
            "distribution": {str(s): scores.count(s) for s in range(1, 6)},
        },
        "backlog": {s: sum(1 for r in requests if r.status == s) for s in STATUSES[:3]},
    }


def stats(client: Any, **query: str) -> dict[str, Any]:
    response = client.get(STATS, params=query, headers=admin())
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "Support statistics fetched successfully"
    return dict(response.json()["data"])


def stored(db: sa.Engine) -> list[dict[str, Any]]:
    with db.connect() as connection:
        rows = connection.execute(requests_table.select().order_by(requests_table.c.id))
        return [dict(r._mapping) for r in rows]


# -- the numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("seed_value", [1, 2, 3])
def test_the_numbers_are_the_plain_computation_of_the_seeded_rows(
    client: Any, db: sa.Engine, seed_value: int
) -> None:
    requests = drawn(120, seed_value=seed_value)
    seed(db, requests)

    answer = stats(client, **{"from": iso(FROM), "to": iso(TO)})

    assert answer == expected(requests, FROM, TO)
    assert answer["opened"] > 0 and answer["firstResponseSeconds"]["median"] is not None


@pytest.mark.parametrize("count", [1, 2, 3, 10, 11])
def test_percentiles_interpolate_between_neighbours_for_any_count(
    client: Any, db: sa.Engine, count: int
) -> None:
    created = FROM + timedelta(hours=1)
    # Durations of whole and odd milliseconds, out of order.
    waits = [timedelta(milliseconds=(7919 * i) % 100003 + 1) for i in range(1, count + 1)]
    requests = [
        Seeded(
            "resolved", created, first_response_at=created + wait, last_resolved_at=created + wait
        )
        for wait in waits
    ]
    seed(db, requests)

    answer = stats(client, **{"from": iso(FROM), "to": iso(TO)})

    durations = [wait / timedelta(seconds=1) for wait in waits]
    assert answer["firstResponseSeconds"] == {
        "median": percentile(durations, 0.5),
        "p90": percentile(durations, 0.9),
    }
    assert answer["resolutionSeconds"] == answer["firstResponseSeconds"]


def test_two_values_give_the_median_halfway_and_p90_nine_tenths_of_the_way(
    client: Any, db: sa.Engine
) -> None:
    created = FROM + timedelta(days=1)
    seed(
        db,
        [
            Seeded("in_progress", created, first_response_at=created + timedelta(seconds=10)),
            Seeded("in_progress", created, first_response_at=created + timedelta(seconds=20.5)),
        ],
    )

    answer = stats(client, **{"from": iso(FROM), "to": iso(TO)})

    assert answer["firstResponseSeconds"] == {"median": 15.25, "p90": 19.45}


def test_the_window_includes_from_and_excludes_to(client: Any, db: sa.Engine) -> None:
    seed(
        db,
        [
            Seeded("open", FROM),
            Seeded("open", TO - timedelta(milliseconds=1)),
            Seeded("open", TO),
            Seeded("open", FROM - timedelta(milliseconds=1)),
        ],
    )

    assert stats(client, **{"from": iso(FROM), "to": iso(TO)})["opened"] == 2


def test_resolved_closed_and_ratings_count_by_their_own_times(client: Any, db: sa.Engine) -> None:
    before = FROM - timedelta(days=3)
    inside = FROM + timedelta(days=2)
    seed(
        db,
        [
            # Opened before the window, resolved, closed and rated in it.
            Seeded(
                "closed",
                before,
                last_resolved_at=inside,
                closed_at=inside + timedelta(hours=1),
                rating_score=4,
                rated_at=inside + timedelta(hours=2),
            ),
            # Opened in the window, resolved after it.
            Seeded("resolved", inside, last_resolved_at=TO + timedelta(days=1)),
            # Reopened: its last resolution was cleared.
            Seeded("in_progress", inside, last_resolved_at=None),
        ],
    )

    answer = stats(client, **{"from": iso(FROM), "to": iso(TO)})

    assert (answer["opened"], answer["resolved"], answer["closed"]) == (2, 1, 1)
    assert answer["resolutionSeconds"] == {"median": 5 * 86400.0, "p90": 5 * 86400.0}
    assert answer["ratings"] == {
        "count": 1,
        "average": 4.0,
        "distribution": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 0},
    }


def test_the_rating_average_is_rounded_to_two_decimals(client: Any, db: sa.Engine) -> None:
    moment = FROM + timedelta(days=1)
    seed(
        db,
        [Seeded("closed", moment, rating_score=score, rated_at=moment) for score in (5, 5, 4)],
    )

    ratings = stats(client, **{"from": iso(FROM), "to": iso(TO)})["ratings"]

    assert ratings == {
        "count": 3,
        "average": 4.67,
        "distribution": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 2},
    }


def test_the_backlog_counts_statuses_now_whatever_the_window(client: Any, db: sa.Engine) -> None:
    long_ago = datetime(2020, 1, 1)
    seed(
        db,
        [Seeded(status, long_ago) for status in ("open", "open", "in_progress", "resolved")]
        + [Seeded("closed", long_ago)],
    )

    answer = stats(client, **{"from": iso(FROM), "to": iso(TO)})

    assert answer["opened"] == 0
    assert answer["backlog"] == {"open": 2, "in_progress": 1, "resolved": 1}


def test_an_empty_database_gives_zeros_nulls_and_all_five_scores(client: Any) -> None:
    answer = stats(client)

    assert {k: v for k, v in answer.items() if k not in ("from", "to")} == {
        "opened": 0,
        "resolved": 0,
        "closed": 0,
        "firstResponseSeconds": {"median": None, "p90": None},
        "resolutionSeconds": {"median": None, "p90": None},
        "ratings": {
            "count": 0,
            "average": None,
            "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
        },
        "backlog": {"open": 0, "in_progress": 0, "resolved": 0},
    }


def test_reading_the_statistics_changes_nothing_stored(client: Any, db: sa.Engine) -> None:
    seed(db, drawn(30, seed_value=7))
    before = stored(db)

    stats(client, **{"from": iso(FROM), "to": iso(TO)})
    stats(client)

    assert stored(db) == before


def test_an_admin_reading_the_statistics_is_one_the_service_has_seen(client: Any) -> None:
    staff = admin(name="Stats Reader")
    assert client.get(STATS, headers=staff).status_code == 200

    admins = client.get("/api/admin/admins", headers=admin()).json()["data"]
    assert {"id": admin_id_of(staff), "name": "Stats Reader", "image": None} in admins


# -- the window ---------------------------------------------------------------------------


def parsed(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_the_default_window_is_the_last_30_days(client: Any) -> None:
    asked = datetime.now(UTC).replace(tzinfo=None)

    answer = stats(client)

    end = parsed(answer["to"])
    assert abs(end - asked) < timedelta(seconds=30)
    assert parsed(answer["from"]) == end - timedelta(days=30)


def test_a_from_alone_ends_30_days_later(client: Any) -> None:
    answer = stats(client, **{"from": "2026-01-10T08:00:00.000Z"})

    assert (answer["from"], answer["to"]) == (
        "2026-01-10T08:00:00.000Z",
        "2026-02-09T08:00:00.000Z",
    )


def test_a_to_alone_starts_30_days_earlier(client: Any) -> None:
    answer = stats(client, to="2026-03-01T00:00:00.000Z")

    assert (answer["from"], answer["to"]) == (
        "2026-01-30T00:00:00.000Z",
        "2026-03-01T00:00:00.000Z",
    )


def test_a_default_bound_past_the_years_a_timestamp_names_stops_at_the_last_one(
    client: Any,
) -> None:
    late = stats(client, **{"from": "9999-12-20T00:00:00Z"})
    early = stats(client, to="0001-01-10T00:00:00Z")

    assert late["to"] == "9999-12-31T23:59:59.999Z"
    assert early["from"] == "0001-01-01T00:00:00.000Z"


def test_any_rfc_3339_offset_is_taken_as_utc_to_the_millisecond(client: Any) -> None:
    answer = stats(
        client, **{"from": "2026-01-10T10:30:00.1239+02:00", "to": "2026-01-11t00:00:00z"}
    )

    assert (answer["from"], answer["to"]) == (
        "2026-01-10T08:30:00.123Z",
        "2026-01-11T00:00:00.000Z",
    )


def test_equal_bounds_are_an_empty_window(client: Any, db: sa.Engine) -> None:
    seed(db, [Seeded("open", FROM)])

    assert stats(client, **{"from": iso(FROM), "to": iso(FROM)})["opened"] == 0


def test_from_after_to_is_422_on_from(client: Any) -> None:
    response = client.get(
        STATS,
        params={"from": "2026-02-01T00:00:00.000Z", "to": "2026-01-01T00:00:00.000Z"},
        headers=admin(),
    )

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["from"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from", "2026-02-30T00:00:00.000Z"),
        ("to", "2026-01-01T24:00:00Z"),
        ("to", "2026-01-01T00:00:00+24:00"),
        ("from", "0001-01-01T00:00:00+01:00"),
    ],
)
def test_a_date_time_that_names_no_moment_is_422_on_its_field(
    client: Any, field: str, value: str
) -> None:
    response = client.get(STATS, params={field: value}, headers=admin())

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == [field]


@pytest.mark.parametrize(
    "value",
    ["2026-01-01", "2026-01-01T00:00:00", "yesterday", "2026-01-01T00:00:00.000Z" + "0" * 20],
)
def test_a_value_that_is_no_rfc_3339_date_time_is_422(client: Any, value: str) -> None:
    response = client.get(STATS, params={"to": value}, headers=admin())

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["to"]


def test_without_a_token_it_is_401(client: Any) -> None:
    response = client.get(STATS)

    assert_problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_customer_token_is_403(client: Any) -> None:
    assert_problem(client.get(STATS, headers=customer()), 403, "forbidden")


# -- both databases give the same answer --------------------------------------------------


def _read_both(sqlite_url: str, pg_url: str, window: Window) -> list[Any]:
    async def run(url: str) -> Any:
        database = Database(url)
        try:
            return await SupportStatistics(database).read(window)
        finally:
            await database.dispose()

    return [asyncio.run(run(url)) for url in (sqlite_url, pg_url)]


@pytest.mark.skipif(PG_URL is None, reason="SUPPORT_TEST_PG_URL is not set")
@pytest.mark.postgres
@pytest.mark.parametrize("seed_value", [11, 12])
def test_sqlite_and_postgresql_give_the_same_answer(
    tmp_path: Path, sqlite_template: Path, seed_value: int
) -> None:
    assert PG_URL is not None
    shutil.copyfile(sqlite_template, tmp_path / "support.db")
    sqlite_url = f"sqlite:///{tmp_path / 'support.db'}"
    reset_pg(PG_URL)
    requests = drawn(200, seed_value=seed_value)
    for url in (sqlite_url, PG_URL):
        engine = sa.create_engine(sync_url(url))
        seed(engine, requests)
        engine.dispose()

    on_sqlite, on_postgresql = _read_both(sqlite_url, PG_URL, Window(FROM, TO))

    assert on_sqlite == on_postgresql
    assert on_sqlite.first_response.median is not None
    assert on_sqlite.ratings_average is not None
