"""Tags (``PATCH`` takes a set; staff-only) and the queue's filters by platform, app version,
tag, rating and score, each exact, combinable, bound to its cursors and walking its index.

Ratings are seeded straight into the database (``rating_score``, ``rated_at``): rating is
another feature's; these tests only filter by it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from support_requests.storage import pagination, support_desk
from support_requests.storage.models import Base
from support_requests.storage.support_desk import REQUEST_COLUMNS, QueueFilters
from tests.helpers import (
    ADMIN,
    MOBILE,
    assert_problem,
    create,
    customer,
    error_fields,
    known_admin,
    move_to,
    reply,
    stored_request,
    stored_rows,
)

REQUESTS = Base.metadata.tables["support_requests"]
TAGS = Base.metadata.tables["request_tags"]


def _patch(client: Any, headers: dict[str, str], request_id: int, **body: Any) -> Any:
    return client.patch(f"{ADMIN}/{request_id}", json=body, headers=headers)


def _tag_rows(db: Any, request_id: int) -> list[tuple[str, datetime]]:
    with db.connect() as connection:
        rows = connection.execute(
            sa.select(TAGS.c.tag, TAGS.c.created_at)
            .where(TAGS.c.request_id == request_id)
            .order_by(TAGS.c.tag)
        )
        return [(row.tag, row.created_at) for row in rows]


def _rate(db: Any, request_id: int, score: int) -> None:
    with db.begin() as connection:
        connection.execute(
            REQUESTS.update()
            .where(REQUESTS.c.id == request_id)
            .values(rating_score=score, rated_at=sa.func.current_timestamp())
        )


def _ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


# -- tags ------------------------------------------------------------------------------


def test_tags_are_a_set_stored_sorted_in_the_column_and_one_row_each(client: Any, db: Any) -> None:
    agent = known_admin(client)
    created = create(client, customer())

    response = _patch(client, agent, created["id"], tags=["crash", "bug", "crash", "vip"])

    assert response.status_code == 200, response.text
    assert response.json()["data"]["tags"] == ["bug", "crash", "vip"]
    row = stored_request(db, created["id"])
    assert row["tags"] == ["bug", "crash", "vip"]
    created_at = row["created_at"]
    assert _tag_rows(db, created["id"]) == [
        ("bug", created_at),
        ("crash", created_at),
        ("vip", created_at),
    ]


def test_tags_replace_the_old_set(client: Any, db: Any) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]
    _patch(client, agent, request_id, tags=["bug", "crash"])

    response = _patch(client, agent, request_id, tags=["crash", "billing"])

    assert response.status_code == 200, response.text
    assert response.json()["data"]["tags"] == ["billing", "crash"]
    assert stored_request(db, request_id)["tags"] == ["billing", "crash"]
    assert [tag for tag, _ in _tag_rows(db, request_id)] == ["billing", "crash"]


def test_empty_tags_clear_the_set(client: Any, db: Any) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]
    _patch(client, agent, request_id, tags=["bug"])

    response = _patch(client, agent, request_id, tags=[])

    assert response.status_code == 200, response.text
    assert response.json()["data"]["tags"] == []
    assert stored_request(db, request_id)["tags"] == []
    assert _tag_rows(db, request_id) == []


def test_a_new_request_has_no_tags(client: Any, db: Any) -> None:
    request_id = create(client, customer())["id"]
    agent = known_admin(client)

    detail = client.get(f"{ADMIN}/{request_id}", headers=agent).json()["data"]
    [item] = client.get(ADMIN, headers=agent).json()["data"]

    assert detail["tags"] == [] and item["tags"] == []
    assert stored_request(db, request_id)["tags"] == []


def test_tags_change_is_recorded_in_the_history(client: Any, db: Any) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]
    _patch(client, agent, request_id, tags=["bug"])
    _patch(client, agent, request_id, tags=["bug", "crash"])

    events = client.get(f"{ADMIN}/{request_id}/events", headers=agent).json()["data"]

    assert [e["type"] for e in events] == ["created", "tags_changed", "tags_changed"]
    assert events[1]["changes"] == {"tags": {"from": [], "to": ["bug"]}}
    assert events[2]["changes"] == {"tags": {"from": ["bug"], "to": ["bug", "crash"]}}
    stored = stored_rows(db, "request_events", request_id)
    assert stored[2]["changes"] == {"tags": {"from": ["bug"], "to": ["bug", "crash"]}}


def test_the_same_tags_again_change_nothing(client: Any, db: Any) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]
    _patch(client, agent, request_id, tags=["bug", "crash"])
    before = stored_request(db, request_id)

    response = _patch(client, agent, request_id, tags=["crash", "bug", "bug"])

    assert response.status_code == 200, response.text
    assert stored_request(db, request_id) == before
    assert len(stored_rows(db, "request_events", request_id)) == 2


def test_tags_only_change_leaves_what_the_customer_sees(client: Any, db: Any) -> None:
    alice = customer()
    agent = known_admin(client)
    request_id = create(client, alice)["id"]
    detail = client.get(f"{MOBILE}/{request_id}", headers=alice)
    listing = client.get(MOBILE, headers=alice)
    staff_detail = client.get(f"{ADMIN}/{request_id}", headers=agent)
    before = stored_request(db, request_id)

    response = _patch(client, agent, request_id, tags=["bug"])

    assert response.status_code == 200, response.text
    assert response.json()["data"]["updatedAt"] == detail.json()["data"]["updatedAt"]
    after = stored_request(db, request_id)
    assert after["updated_at"] == before["updated_at"]
    assert after["customer_version"] == before["customer_version"]
    assert after["version"] == before["version"] + 1
    again = client.get(
        f"{MOBILE}/{request_id}", headers={**alice, "If-None-Match": detail.headers["etag"]}
    )
    assert again.status_code == 304
    listed = client.get(MOBILE, headers={**alice, "If-None-Match": listing.headers["etag"]})
    assert listed.status_code == 304
    staff_again = client.get(
        f"{ADMIN}/{request_id}", headers={**agent, "If-None-Match": staff_detail.headers["etag"]}
    )
    assert staff_again.status_code == 200
    assert staff_again.json()["data"]["tags"] == ["bug"]


def test_tags_with_a_status_change_take_the_normal_path(client: Any, db: Any) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]
    before = stored_request(db, request_id)

    response = _patch(client, agent, request_id, status="in_progress", tags=["bug"])

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "in_progress" and data["tags"] == ["bug"]
    after = stored_request(db, request_id)
    assert after["updated_at"] > before["updated_at"]
    assert after["customer_version"] == before["customer_version"] + 1
    events = stored_rows(db, "request_events", request_id)
    assert [e["type"] for e in events] == ["created", "status_changed", "tags_changed"]


def test_tags_are_allowed_on_a_closed_request(client: Any, db: Any) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]
    move_to(client, agent, request_id, "closed")

    response = _patch(client, agent, request_id, tags=["refund"])

    assert response.status_code == 200, response.text
    assert response.json()["data"]["tags"] == ["refund"]
    assert response.json()["data"]["status"] == "closed"
    assert stored_request(db, request_id)["tags"] == ["refund"]


def test_tags_with_a_refused_status_change_are_refused_too(client: Any, db: Any) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]
    move_to(client, agent, request_id, "closed")

    response = _patch(client, agent, request_id, status="open", tags=["refund"])

    assert_problem(response, 409, "invalid_transition")
    assert stored_request(db, request_id)["tags"] == []
    assert _tag_rows(db, request_id) == []


def test_more_than_ten_tags_is_422(client: Any, db: Any) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]

    response = _patch(client, agent, request_id, tags=[f"tag-{n}" for n in range(11)])

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["tags"]
    assert stored_request(db, request_id)["tags"] == []


@pytest.mark.parametrize("tag", ["Bug", "-bug", "bug fix", "", "a" * 33, "bug_ios", "bug\n"])
def test_a_tag_that_is_not_lowercase_letters_digits_and_dashes_is_422(
    client: Any, db: Any, tag: str
) -> None:
    agent = known_admin(client)
    request_id = create(client, customer())["id"]

    response = _patch(client, agent, request_id, tags=["ok", tag])

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["tags.1"]
    assert _tag_rows(db, request_id) == []


def test_mobile_never_sees_tags(client: Any) -> None:
    alice = customer()
    agent = known_admin(client)
    created = create(client, alice)
    _patch(client, agent, created["id"], tags=["bug", "vip"])

    replied = reply(client, alice, created["id"])
    detail = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]
    items = client.get(MOBILE, headers=alice).json()["data"]

    for view in (created, replied, detail, *items):
        assert "tags" not in view
    raw = client.get(f"{MOBILE}/{created['id']}", headers=alice).text
    assert "vip" not in raw


# -- queue filters ---------------------------------------------------------------------


@pytest.fixture
def desk(client: Any, db: Any) -> dict[str, int]:
    """Requests from several devices, some tagged, some rated; their ids by name."""
    agent = known_admin(client)
    specs: dict[str, tuple[dict[str, str] | None, list[str], int | None]] = {
        "ios-old": ({"platform": "ios", "appVersion": "4.2"}, ["bug"], None),
        "ios-new": ({"platform": "ios", "appVersion": "4.2.1"}, ["bug-ios"], 2),
        "android": ({"platform": "android", "appVersion": "4.2.1"}, ["bug", "vip"], 5),
        "web": ({"platform": "web"}, [], 1),
        "none": (None, ["bug"], None),
    }
    ids: dict[str, int] = {}
    for name, (device, tags, score) in specs.items():
        fields: dict[str, Any] = {"subject": name}
        if device is not None:
            fields["device"] = device
        ids[name] = create(client, customer(), **fields)["id"]
        if tags:
            assert _patch(client, agent, ids[name], tags=tags).status_code == 200
        if score is not None:
            _rate(db, ids[name], score)
    return ids


def _queue(client: Any, **params: str) -> list[int]:
    return _ids(client.get(ADMIN, params=params, headers=known_admin(client)))


def _newest_first(desk: dict[str, int], *names: str) -> list[int]:
    return sorted((desk[name] for name in names), reverse=True)


def test_queue_filters_by_platform(client: Any, desk: dict[str, int]) -> None:
    assert _queue(client, platform="ios") == _newest_first(desk, "ios-old", "ios-new")
    assert _queue(client, platform="web") == [desk["web"]]
    assert _queue(client, platform="other") == []


def test_queue_filters_by_exact_app_version(client: Any, desk: dict[str, int]) -> None:
    assert _queue(client, appVersion="4.2.1") == _newest_first(desk, "ios-new", "android")
    assert _queue(client, appVersion="4.2") == [desk["ios-old"]]
    assert _queue(client, appVersion="4") == []


def test_queue_filters_by_exact_tag(client: Any, desk: dict[str, int]) -> None:
    assert _queue(client, tag="bug") == _newest_first(desk, "ios-old", "android", "none")
    assert _queue(client, tag="bug-ios") == [desk["ios-new"]]
    assert _queue(client, tag="bu") == []


def test_queue_filters_by_rated(client: Any, desk: dict[str, int]) -> None:
    assert _queue(client, rated="true") == _newest_first(desk, "ios-new", "android", "web")
    assert _queue(client, rated="false") == _newest_first(desk, "ios-old", "none")


def test_queue_filters_by_max_score_and_only_rated(client: Any, desk: dict[str, int]) -> None:
    assert _queue(client, maxScore="2") == _newest_first(desk, "ios-new", "web")
    assert _queue(client, maxScore="1") == [desk["web"]]
    assert _queue(client, maxScore="5") == _newest_first(desk, "ios-new", "android", "web")
    assert _queue(client, maxScore="5", rated="false") == []


def test_queue_filters_combine(client: Any, desk: dict[str, int]) -> None:
    assert _queue(client, tag="bug", platform="ios") == [desk["ios-old"]]
    assert _queue(client, tag="bug", rated="true") == [desk["android"]]
    assert _queue(client, platform="ios", maxScore="3", appVersion="4.2.1") == [desk["ios-new"]]
    assert _queue(client, tag="bug", sort="createdAt") == sorted(
        (desk["ios-old"], desk["android"], desk["none"])
    )
    assert _queue(client, tag="bug", sort="-updatedAt") == _newest_first(
        desk, "ios-old", "android", "none"
    )


def test_queue_filtered_by_tag_pages_with_its_cursor(client: Any, db: Any) -> None:
    agent = known_admin(client)
    ids = [create(client, customer())["id"] for _ in range(7)]
    tagged = [request_id for n, request_id in enumerate(ids) if n != 3]
    for request_id in tagged:
        _patch(client, agent, request_id, tags=["bug", "vip"])
    for sort, expected in (("-createdAt", tagged[::-1]), ("createdAt", tagged)):
        seen: list[int] = []
        cursor = None
        while True:
            params = {"tag": "vip", "limit": "2", "sort": sort}
            if cursor:
                params["cursor"] = cursor
            body = client.get(ADMIN, params=params, headers=agent).json()
            seen += [item["id"] for item in body["data"]]
            cursor = body["meta"]["nextCursor"]
            if cursor is None:
                break
        assert seen == expected


@pytest.mark.parametrize(
    "other",
    [
        {"platform": "android"},
        {"appVersion": "4.2"},
        {"tag": "vip"},
        {"rated": "false"},
        {"maxScore": "4"},
        {},
    ],
    ids=["platform", "app-version", "tag", "rated", "max-score", "no-filter"],
)
def test_queue_cursor_is_bound_to_the_new_filters(
    client: Any, desk: dict[str, int], other: dict[str, str]
) -> None:
    agent = known_admin(client)
    first = client.get(ADMIN, params={"limit": "1", "tag": "bug"}, headers=agent).json()
    cursor = first["meta"]["nextCursor"]
    assert cursor is not None

    response = client.get(ADMIN, params={"limit": "1", "cursor": cursor, **other}, headers=agent)

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["cursor"]
    same = client.get(ADMIN, params={"limit": "1", "cursor": cursor, "tag": "bug"}, headers=agent)
    assert _ids(same) == _newest_first(desk, "ios-old", "android", "none")[1:2]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"platform": "symbian"}, "platform"),
        ({"appVersion": "4" * 33}, "appVersion"),
        ({"appVersion": " 4.2"}, "appVersion"),
        ({"tag": "Bug"}, "tag"),
        ({"rated": "maybe"}, "rated"),
        ({"maxScore": "0"}, "maxScore"),
        ({"maxScore": "6"}, "maxScore"),
    ],
    ids=["platform", "app-version-too-long", "app-version-padded", "tag", "rated", "low", "high"],
)
def test_queue_filter_out_of_its_schema_is_422(
    client: Any, params: dict[str, str], field: str
) -> None:
    response = client.get(ADMIN, params=params, headers=known_admin(client))

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == [field]


# -- indexes ---------------------------------------------------------------------------

INDEXED_FILTERS = {
    "ix_support_requests_platform_created": QueueFilters(platform="ios"),
    "ix_support_requests_app_version_created": QueueFilters(app_version="4.2.1"),
    "ix_request_tags_tag_created": QueueFilters(tag="bug"),
    "ix_support_requests_rated_created": QueueFilters(rated=True),
    "ix_support_requests_rated_created ": QueueFilters(max_score=2),
}


def _fill_a_desk(db: Any, count: int = 2000) -> None:
    """``count`` requests straight into the tables, as a desk's shares are (one in 50
    rated, one in 10 tagged), and statistics of them for the planner."""
    moment = datetime(2026, 1, 1)
    rows = [
        {
            "customer_id": f"c{n}",
            "category": "other",
            "subject": "s",
            "status": "closed",
            "created_at": moment,
            "updated_at": moment,
            "version": 1,
            "device_platform": ("ios", "android", "web", "other")[n % 4],
            "device_app_version": f"4.{n % 40}",
            "rating_score": 1 + n % 5 if n % 50 == 0 else None,
        }
        for n in range(count)
    ]
    with db.begin() as connection:
        connection.execute(REQUESTS.insert(), rows)
        ids = connection.execute(sa.select(REQUESTS.c.id)).scalars().all()
        tags = [{"request_id": i, "tag": f"t{i % 30}", "created_at": moment} for i in ids[::10]]
        connection.execute(TAGS.insert(), tags)
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE")


@pytest.mark.parametrize("index", list(INDEXED_FILTERS), ids=lambda i: i.strip())
def test_each_filtered_default_page_walks_its_index(db: Any, index: str) -> None:
    _fill_a_desk(db)
    listing = support_desk._queue_listing(INDEXED_FILTERS[index])
    statement, parameters = listing.statement(REQUEST_COLUMNS, 20, None)
    compiled = statement.compile(dialect=db.dialect)
    values = compiled.construct_params(parameters)
    with db.connect() as connection:
        if db.dialect.name == "sqlite":
            positional = tuple(values[name] for name in compiled.positiontup or ())
            plan = connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled.string}", positional
            ).all()
            text = "\n".join(str(row[-1]) for row in plan)
        else:
            # Planner costs on a nearly empty table favour a scan and a sort: forbid both,
            # so that the plan shows which index gives the page in order.
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            connection.exec_driver_sql("SET LOCAL enable_sort = off")
            plan = connection.exec_driver_sql(f"EXPLAIN {compiled.string}", values).all()
            text = "\n".join(row[0] for row in plan)
    assert index.strip() in text, text
    assert "TEMP B-TREE" not in text and "Sort" not in text.split("->")[0], text


def test_queue_cursors_issued_before_the_new_filters_stay_valid() -> None:
    before = pagination.scope_of(
        listing="admin",
        status="open",
        category=None,
        assigned=None,
        assignee=None,
        sort="-createdAt",
    )

    assert support_desk._queue_listing(QueueFilters(status="open")).scope == before
    assert support_desk._queue_listing(QueueFilters(status="open", tag="bug")).scope != before
