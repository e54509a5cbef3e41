"""The admin queue: ``GET /api/admin/support-requests`` filters, sorts and pages.

Expected pages are computed from the stored rows (the ``db`` fixture), not from
the API, so a wrong filter, order or cursor shows up as a difference.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from support_requests.storage.models import Base
from tests.helpers import (
    ADMIN,
    MOBILE,
    admin,
    admin_id_of,
    create,
    customer,
    known_admin,
    move_to,
)

CATEGORIES = ["account", "payment", "technical", "other"]
STATUSES = ["open", "in_progress", "resolved", "closed"]


def _stored(db: Any) -> list[dict[str, Any]]:
    table = Base.metadata.tables["support_requests"]
    with db.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(table.select())]


def _expected_ids(db: Any, params: dict[str, str]) -> list[int]:
    """The queue's ids for ``params``, computed from the stored rows."""
    rows = _stored(db)
    if "status" in params:
        rows = [r for r in rows if r["status"] == params["status"]]
    if "category" in params:
        rows = [r for r in rows if r["category"] == params["category"]]
    if "assigned" in params:
        wanted = params["assigned"] == "true"
        rows = [r for r in rows if (r["assigned_admin_id"] is not None) is wanted]
    if "assigneeId" in params:
        rows = [r for r in rows if r["assigned_admin_id"] == params["assigneeId"].lower()]
    sort = params.get("sort", "-createdAt")
    column = "updated_at" if sort == "-updatedAt" else "created_at"
    rows.sort(key=lambda r: (r[column], r["id"]), reverse=sort.startswith("-"))
    return [r["id"] for r in rows]


def _ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def _walk(client: Any, headers: dict[str, str], params: dict[str, str], limit: int) -> list[Any]:
    """Every page of the queue for ``params``, following ``nextCursor`` to the end."""
    pages: list[list[int]] = []
    cursor = None
    while True:
        query = {**params, "limit": str(limit)}
        if cursor is not None:
            query["cursor"] = cursor
        body = client.get(ADMIN, params=query, headers=headers).json()
        pages.append([item["id"] for item in body["data"]])
        cursor = body["meta"]["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor never ran out"


def _seed(client: Any, staff: list[dict[str, str]], count: int = 11) -> list[int]:
    """Requests of every category and status, some assigned, updated out of creation order."""
    rng = random.Random(count)
    ids = []
    for index in range(count):
        headers = customer(name=f"Customer {index}")
        ids.append(create(client, headers, category=CATEGORIES[index % 4])["id"])
    for index in rng.sample(range(count), count):
        request_id = ids[index]
        if index % 3 != 0:
            assignee = admin_id_of(staff[index % len(staff)])
            response = client.patch(
                f"{ADMIN}/{request_id}", json={"assignedAdminId": assignee}, headers=staff[0]
            )
            assert response.status_code == 200, response.text
        status = STATUSES[(index // 2) % 4]
        if status != "open":
            move_to(client, staff[0], request_id, status)
    return ids


@pytest.fixture
def staff(client: Any) -> list[dict[str, str]]:
    return [known_admin(client, name="Ana Admin"), known_admin(client, name="Bo Admin")]


def test_queue_lists_every_request_newest_first_by_default(client: Any, db: Any) -> None:
    ids = [create(client, customer())["id"] for _ in range(4)]
    response = client.get(ADMIN, headers=admin())
    assert _ids(response) == list(reversed(ids))
    assert response.json()["meta"] == {"nextCursor": None}
    assert response.json()["message"]
    assert _ids(response) == _expected_ids(db, {})


def test_queue_item_is_the_admin_detail_without_messages(
    client: Any, staff: list[dict[str, str]]
) -> None:
    alice = customer(name="Alice", picture="https://cdn.example.com/alice.png")
    request_id = create(client, alice)["id"]
    client.post(f"{ADMIN}/{request_id}/messages", json={"body": "On it."}, headers=staff[0])
    [item] = client.get(ADMIN, headers=staff[1]).json()["data"]
    detail = client.get(f"{ADMIN}/{request_id}", headers=staff[1]).json()["data"]
    assert "messages" not in item
    assert item == {k: v for k, v in detail.items() if k != "messages"}
    assert item["assignedAdminId"] == admin_id_of(staff[0])
    assert item["customer"]["name"] == "Alice"
    assert item["customer"]["image"] == "https://cdn.example.com/alice.png"
    assert item["allowedActions"] == [
        "reply",
        "assign",
        "status:open",
        "status:resolved",
        "status:closed",
    ]


@pytest.mark.parametrize("status", STATUSES)
def test_queue_status_filter_returns_only_requests_in_that_status(
    client: Any, db: Any, staff: list[dict[str, str]], status: str
) -> None:
    _seed(client, staff)
    ids = _ids(client.get(ADMIN, params={"status": status}, headers=staff[0]))
    assert ids
    assert ids == _expected_ids(db, {"status": status})
    items = client.get(ADMIN, params={"status": status}, headers=staff[0]).json()["data"]
    assert {item["status"] for item in items} == {status}


@pytest.mark.parametrize("category", CATEGORIES)
def test_queue_category_filter_returns_only_requests_of_that_category(
    client: Any, db: Any, staff: list[dict[str, str]], category: str
) -> None:
    _seed(client, staff)
    response = client.get(ADMIN, params={"category": category}, headers=staff[0])
    assert _ids(response)
    assert _ids(response) == _expected_ids(db, {"category": category})
    assert {item["category"] for item in response.json()["data"]} == {category}


@pytest.mark.parametrize("assigned", ["true", "false"])
def test_queue_assigned_filter_separates_owned_from_unowned_requests(
    client: Any, db: Any, staff: list[dict[str, str]], assigned: str
) -> None:
    _seed(client, staff)
    response = client.get(ADMIN, params={"assigned": assigned}, headers=staff[0])
    assert _ids(response)
    assert _ids(response) == _expected_ids(db, {"assigned": assigned})
    items = response.json()["data"]
    assert {item["isAssigned"] for item in items} == {assigned == "true"}
    assert {item["assignedAdminId"] is None for item in items} == {assigned == "false"}


def test_queue_assignee_filter_returns_only_that_admins_requests(
    client: Any, db: Any, staff: list[dict[str, str]]
) -> None:
    _seed(client, staff)
    for member in staff:
        admin_id = admin_id_of(member)
        response = client.get(ADMIN, params={"assigneeId": admin_id}, headers=staff[0])
        assert _ids(response)
        assert _ids(response) == _expected_ids(db, {"assigneeId": admin_id})
        assert {item["assignedAdminId"] for item in response.json()["data"]} == {admin_id}


def test_queue_assignee_filter_accepts_an_upper_case_uuid(
    client: Any, db: Any, staff: list[dict[str, str]]
) -> None:
    _seed(client, staff)
    admin_id = admin_id_of(staff[1])
    upper = client.get(ADMIN, params={"assigneeId": admin_id.upper()}, headers=staff[0])
    lower = client.get(ADMIN, params={"assigneeId": admin_id}, headers=staff[0])
    assert _ids(upper) == _ids(lower) == _expected_ids(db, {"assigneeId": admin_id})
    assert _ids(upper)


def test_queue_assignee_filter_for_an_admin_without_requests_is_empty(
    client: Any, staff: list[dict[str, str]]
) -> None:
    _seed(client, staff)
    idle = known_admin(client, name="Idle Admin")
    response = client.get(ADMIN, params={"assigneeId": admin_id_of(idle)}, headers=idle)
    assert _ids(response) == []
    assert response.json()["meta"] == {"nextCursor": None}


@pytest.mark.parametrize(
    "params",
    [
        {"status": "resolved", "category": "payment"},
        {"status": "closed", "assigned": "true"},
        {"category": "account", "assigned": "false", "sort": "createdAt"},
        {"status": "in_progress", "assigneeId": "STAFF0", "sort": "-updatedAt"},
    ],
    ids=["status+category", "status+assigned", "category+assigned+sort", "status+assignee+sort"],
)
def test_queue_filters_combine_with_and(
    client: Any, db: Any, staff: list[dict[str, str]], params: dict[str, str]
) -> None:
    _seed(client, staff, count=24)
    if params.get("assigneeId") == "STAFF0":
        params = {**params, "assigneeId": admin_id_of(staff[0])}
    ids = _ids(client.get(ADMIN, params=params, headers=staff[0]))
    assert ids
    assert ids == _expected_ids(db, params)
    singles = [
        set(_ids(client.get(ADMIN, params={name: value}, headers=staff[0])))
        for name, value in params.items()
        if name != "sort"
    ]
    assert set(ids) == set.intersection(*singles)
    assert any(len(ids) < len(single) for single in singles)


def test_queue_sort_created_at_lists_oldest_first(client: Any, db: Any) -> None:
    ids = [create(client, customer())["id"] for _ in range(4)]
    response = client.get(ADMIN, params={"sort": "createdAt"}, headers=admin())
    assert _ids(response) == ids == _expected_ids(db, {"sort": "createdAt"})


def test_queue_sort_minus_updated_at_lists_the_latest_change_first(
    client: Any, db: Any, staff: list[dict[str, str]]
) -> None:
    owners = [customer() for _ in range(4)]
    ids = [create(client, owner)["id"] for owner in owners]
    # A few milliseconds apart, so that no two changes share a timestamp.
    time.sleep(0.005)
    client.post(f"{MOBILE}/{ids[0]}/messages", json={"body": "Any news?"}, headers=owners[0])
    time.sleep(0.005)
    move_to(client, staff[0], ids[2], "in_progress")
    time.sleep(0.005)
    client.post(f"{ADMIN}/{ids[1]}/messages", json={"body": "Looking."}, headers=staff[1])
    response = client.get(ADMIN, params={"sort": "-updatedAt"}, headers=staff[0])
    assert _ids(response) == [ids[1], ids[2], ids[0], ids[3]]
    assert _ids(response) == _expected_ids(db, {"sort": "-updatedAt"})
    updated = [item["updatedAt"] for item in response.json()["data"]]
    assert updated == sorted(updated, reverse=True)


WALKS = [
    {},
    {"sort": "createdAt"},
    {"sort": "-updatedAt"},
    {"category": "payment"},
    {"status": "in_progress", "sort": "createdAt"},
    {"assigned": "false", "sort": "-updatedAt"},
    {"assigned": "true"},
]


@pytest.mark.parametrize("params", WALKS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
def test_queue_page_walk_has_no_gaps_and_no_repeats(
    client: Any, db: Any, staff: list[dict[str, str]], params: dict[str, str]
) -> None:
    _seed(client, staff, count=13)
    expected = _expected_ids(db, params)
    assert expected
    for limit in (1, 2, 5):
        pages = _walk(client, staff[0], params, limit)
        assert [item for page in pages for item in page] == expected, f"limit={limit}"
        assert all(len(page) == limit for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= limit
        assert len(pages) == -(-len(expected) // limit)


def test_queue_last_page_has_no_next_cursor_when_it_is_exactly_full(client: Any, db: Any) -> None:
    for _ in range(4):
        create(client, customer())
    pages = _walk(client, admin(), {}, 2)
    assert pages == [_expected_ids(db, {})[:2], _expected_ids(db, {})[2:]]


def test_queue_walk_skips_nothing_when_requests_arrive_meanwhile(client: Any, db: Any) -> None:
    first = [create(client, customer())["id"] for _ in range(5)]
    headers = admin()
    page = client.get(ADMIN, params={"limit": "2"}, headers=headers).json()
    arrived = create(client, customer())["id"]
    seen = [item["id"] for item in page["data"]]
    cursor = page["meta"]["nextCursor"]
    while cursor is not None:
        page = client.get(ADMIN, params={"limit": "2", "cursor": cursor}, headers=headers).json()
        seen += [item["id"] for item in page["data"]]
        cursor = page["meta"]["nextCursor"]
    assert seen == list(reversed(first))
    assert _ids(client.get(ADMIN, headers=headers))[0] == arrived


OTHER_SCOPES: dict[str, Callable[[str], dict[str, str]]] = {
    "status": lambda _: {"status": "open"},
    "category": lambda _: {"category": "technical"},
    "assigned": lambda _: {"assigned": "false"},
    "assigneeId": lambda admin_id: {"assigneeId": admin_id},
    "sort-createdAt": lambda _: {"sort": "createdAt"},
    "sort-updatedAt": lambda _: {"sort": "-updatedAt"},
    "explicit-default-sort-with-status": lambda _: {"sort": "-createdAt", "status": "open"},
}


@pytest.mark.parametrize("other", list(OTHER_SCOPES))
def test_cursor_reused_with_other_filters_or_sort_is_422(
    client: Any, db: Any, staff: list[dict[str, str]], other: str
) -> None:
    for _ in range(3):
        create(client, customer(), category="technical")
    first = client.get(ADMIN, params={"limit": "1"}, headers=staff[0]).json()
    cursor = first["meta"]["nextCursor"]
    assert cursor is not None
    params = {**OTHER_SCOPES[other](admin_id_of(staff[1])), "limit": "1", "cursor": cursor}
    response = client.get(ADMIN, params=params, headers=staff[0])
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed"
    assert [e["field"] for e in response.json()["errors"]] == ["cursor"]
    same = client.get(ADMIN, params={"limit": "1", "cursor": cursor}, headers=staff[0])
    assert _ids(same) == _expected_ids(db, {})[1:2]


def test_cursor_stays_valid_with_the_filters_and_sort_it_was_issued_for(
    client: Any, db: Any, staff: list[dict[str, str]]
) -> None:
    _seed(client, staff, count=12)
    params = {"category": "technical", "sort": "createdAt"}
    first = client.get(ADMIN, params={**params, "limit": "1"}, headers=staff[0]).json()
    cursor = first["meta"]["nextCursor"]
    again = client.get(ADMIN, params={**params, "limit": "1", "cursor": cursor}, headers=staff[1])
    wider = client.get(ADMIN, params={**params, "limit": "50", "cursor": cursor}, headers=staff[1])
    assert _ids(again) == _expected_ids(db, params)[1:2]
    assert _ids(wider) == _expected_ids(db, params)[1:]


def test_mobile_cursor_is_not_accepted_by_the_queue(client: Any) -> None:
    alice = customer()
    for _ in range(3):
        create(client, alice)
    cursor = client.get(MOBILE, params={"limit": "1"}, headers=alice).json()["meta"]["nextCursor"]
    assert cursor is not None
    response = client.get(ADMIN, params={"limit": "1", "cursor": cursor}, headers=admin())
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["cursor"]


@pytest.mark.parametrize("cursor", ["bm90LWEtY3Vyc29y", "abc", "W10", "WyJ4IiwxLCJ5Il0"])
def test_cursor_the_service_did_not_issue_is_422(client: Any, cursor: str) -> None:
    create(client, customer())
    response = client.get(ADMIN, params={"cursor": cursor}, headers=admin())
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed"
    assert [e["field"] for e in response.json()["errors"]] == ["cursor"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "pending"}, "status"),
        ({"category": "billing"}, "category"),
        ({"assigned": "yes"}, "assigned"),
        ({"assigned": "True"}, "assigned"),
        ({"assigneeId": "not-a-uuid"}, "assigneeId"),
        ({"sort": "updatedAt"}, "sort"),
        ({"sort": "-id"}, "sort"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"assignee": "x"}, "assignee"),
    ],
    ids=lambda value: (
        "&".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None
    ),
)
def test_invalid_queue_query_is_422_naming_the_parameter(
    client: Any, params: dict[str, str], field: str
) -> None:
    response = client.get(ADMIN, params=params, headers=admin())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "validation_failed"
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_invalid_queue_query_lists_every_bad_parameter(client: Any) -> None:
    params = {"status": "x", "category": "y", "sort": "z", "limit": "0"}
    response = client.get(ADMIN, params=params, headers=admin())
    assert response.status_code == 422, response.text
    assert sorted(e["field"] for e in response.json()["errors"]) == sorted(params)
