"""Reading support requests: the caller's list and one request's detail with its thread."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from support_requests.storage.models import Base
from tests.helpers import (
    ADMIN,
    MOBILE,
    TIMESTAMP_PATTERN,
    UUID_PATTERN,
    admin_id_of,
    assert_problem,
    assert_same_not_found,
    create,
    customer,
    error_fields,
    known_admin,
    move_to,
    reply,
)

REQUESTS = Base.metadata.tables["support_requests"]
SUMMARY_KEYS = {
    "id",
    "category",
    "subject",
    "status",
    "isAssigned",
    "resolutionNote",
    "resolvedAt",
    "closedAt",
    "lastCustomerMessageAt",
    "lastAdminMessageAt",
    "createdAt",
    "updatedAt",
    "allowedActions",
    "rating",
    "unreadCount",
    "lastReadMessageId",
    "device",
}
TIMESTAMP_KEYS = (
    "resolvedAt",
    "closedAt",
    "lastCustomerMessageAt",
    "lastAdminMessageAt",
    "createdAt",
    "updatedAt",
)


def _list(client: Any, headers: dict[str, str], **params: Any) -> Any:
    return client.get(MOBILE, params=params, headers=headers)


def _walk(client: Any, headers: dict[str, str], **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of the caller's list, following ``nextCursor`` to the end."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = _list(client, headers, **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["data"])
        cursor = body["meta"]["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 200, "pagination does not end"


def _same_created_at(db: sa.Engine, moment: datetime) -> None:
    with db.begin() as connection:
        connection.execute(sa.update(REQUESTS).values(created_at=moment))


# -- detail ----------------------------------------------------------------------------


def test_detail_returns_metadata_and_the_thread(client):
    alice = customer(name="Alex Customer", picture="https://cdn.example.com/customer.png")
    agent = known_admin(client, name="Support Agent", picture="https://cdn.example.com/admin.png")
    created = create(
        client, alice, category="technical", subject="App crashes on checkout", message="Crash."
    )
    replied = reply(client, agent, created["id"], "Thanks, we are looking into it.", api=ADMIN)

    response = client.get(f"{MOBILE}/{created['id']}", headers=alice)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "private, no-cache"
    assert response.headers["etag"]
    body = response.json()
    assert body["message"] == "Support request fetched successfully"
    data = body["data"]
    first, second = data["messages"]
    assert data == {
        "id": created["id"],
        "category": "technical",
        "subject": "App crashes on checkout",
        "status": "in_progress",
        "isAssigned": True,
        "resolutionNote": None,
        "resolvedAt": None,
        "closedAt": None,
        "lastCustomerMessageAt": created["createdAt"],
        "lastAdminMessageAt": second["createdAt"],
        "createdAt": created["createdAt"],
        "updatedAt": replied["updatedAt"],
        "allowedActions": ["reply"],
        "rating": None,
        "unreadCount": 1,
        "lastReadMessageId": None,
        "messages": [
            {
                "id": created["messages"][0]["id"],
                "authorType": "customer",
                "authorName": "Alex Customer",
                "authorImage": "https://cdn.example.com/customer.png",
                "body": "Crash.",
                "attachments": [],
                "createdAt": created["createdAt"],
            },
            {
                "id": second["id"],
                "authorType": "admin",
                "authorName": "Support Agent",
                "authorImage": "https://cdn.example.com/admin.png",
                "body": "Thanks, we are looking into it.",
                "attachments": [],
                "createdAt": second["createdAt"],
            },
        ],
        "device": None,
    }
    assert first["id"] < second["id"]


def test_thread_is_in_chronological_order(client, db):
    alice = customer()
    agent = known_admin(client)
    created = create(client, alice, message="one")
    reply(client, agent, created["id"], "two", api=ADMIN)
    reply(client, alice, created["id"], "three")
    reply(client, agent, created["id"], "four", api=ADMIN)
    reply(client, alice, created["id"], "five")

    data = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]

    messages = data["messages"]
    assert [m["body"] for m in messages] == ["one", "two", "three", "four", "five"]
    assert [m["authorType"] for m in messages] == [
        "customer",
        "admin",
        "customer",
        "admin",
        "customer",
    ]
    ids = [m["id"] for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == 5
    times = [m["createdAt"] for m in messages]
    assert times == sorted(times)
    assert data["lastCustomerMessageAt"] == messages[4]["createdAt"]
    assert data["lastAdminMessageAt"] == messages[3]["createdAt"]


def test_another_customers_request_is_the_same_404_as_a_missing_one(client):
    owner, stranger = customer(), customer()
    theirs = create(client, owner)
    missing_id = theirs["id"] + 1000
    trace = {"X-Request-ID": uuid.uuid4().hex}

    foreign = client.get(f"{MOBILE}/{theirs['id']}", headers={**stranger, **trace})
    missing = client.get(f"{MOBILE}/{missing_id}", headers={**stranger, **trace})

    assert_same_not_found(foreign, theirs["id"], missing, missing_id)
    # The owner still sees it.
    assert client.get(f"{MOBILE}/{theirs['id']}", headers=owner).status_code == 200


def test_largest_id_is_a_valid_id_that_is_not_found(client):
    response = client.get(f"{MOBILE}/9223372036854775807", headers=customer())

    body = assert_problem(response, 404, "not_found")
    assert "9223372036854775807" in body["detail"]


# -- list -------------------------------------------------------------------------------


def test_list_returns_only_the_callers_requests_newest_first(client):
    alice, bob = customer(), customer()
    mine = []
    for index in range(3):
        mine.append(create(client, alice, subject=f"alice {index}"))
        create(client, bob, subject=f"bob {index}")

    response = _list(client, alice)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, no-cache"
    assert response.headers["etag"]
    body = response.json()
    assert body["message"] == "Support requests fetched successfully"
    assert body["meta"] == {"nextCursor": None}
    assert [item["id"] for item in body["data"]] == [r["id"] for r in reversed(mine)]
    assert [item["subject"] for item in body["data"]] == ["alice 2", "alice 1", "alice 0"]


def test_list_items_are_the_detail_without_messages(client):
    alice = customer()
    agent = known_admin(client)
    first = create(client, alice, category="payment", subject="Charged twice")
    second = create(client, alice, category="account")
    reply(client, agent, first["id"], "Refund on the way.", api=ADMIN)
    move_to(client, agent, first["id"], "resolved")

    items = _list(client, alice).json()["data"]

    assert len(items) == 2
    for item in items:
        assert set(item) == SUMMARY_KEYS
        detail = client.get(f"{MOBILE}/{item['id']}", headers=alice).json()["data"]
        detail.pop("messages")
        assert item == detail
    assert items[1]["status"] == "resolved" and items[1]["resolutionNote"]
    assert items[0]["id"] == second["id"]


def test_empty_list_has_no_next_cursor(client):
    response = _list(client, customer())

    assert response.status_code == 200
    assert response.json() == {
        "message": "Support requests fetched successfully",
        "data": [],
        "meta": {"nextCursor": None},
    }


@pytest.mark.parametrize("limit", [1, 2, 5, 7, 11, 12, 100])
def test_pages_cover_every_request_once_for_any_limit(client, limit):
    alice = customer()
    expected = [create(client, alice, subject=f"request {i}")["id"] for i in range(12)]
    expected.reverse()
    create(client, customer())

    pages = _walk(client, alice, limit=limit)

    seen = [item["id"] for page in pages for item in page]
    assert seen == expected
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit
    assert len(pages) == -(-12 // limit)


def test_pages_have_no_gaps_or_repeats_when_requests_share_a_creation_time(client, db):
    alice = customer()
    ids = [create(client, alice)["id"] for _ in range(9)]
    _same_created_at(db, datetime(2026, 3, 17, 10, 0, 0))

    for limit in (1, 2, 4):
        pages = _walk(client, alice, limit=limit)
        assert [item["id"] for page in pages for item in page] == sorted(ids, reverse=True)


def test_a_request_created_during_the_walk_does_not_shift_later_pages(client):
    alice = customer()
    ids = [create(client, alice)["id"] for _ in range(6)]
    first = _list(client, alice, limit=3).json()

    newer = create(client, alice)
    second = _list(client, alice, limit=3, cursor=first["meta"]["nextCursor"]).json()

    walked = [item["id"] for item in first["data"] + second["data"]]
    assert walked == sorted(ids, reverse=True)
    assert second["meta"]["nextCursor"] is None
    assert _list(client, alice, limit=1).json()["data"][0]["id"] == newer["id"]


def test_default_page_size_is_20(client):
    alice = customer()
    for _ in range(21):
        create(client, alice)

    first = _list(client, alice).json()
    second = _list(client, alice, cursor=first["meta"]["nextCursor"]).json()

    assert len(first["data"]) == 20
    assert first["meta"]["nextCursor"] is not None
    assert len(second["data"]) == 1
    assert second["meta"]["nextCursor"] is None


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0", "must be at least 1"),
        ("101", "must be at most 100"),
        ("-1", "must be at least 1"),
        ("abc", "must be an integer"),
        ("1.5", "must be an integer"),
        ("", "must be an integer"),
    ],
)
def test_limit_out_of_bounds_is_422(client, limit, message):
    alice = customer()
    create(client, alice)

    response = client.get(f"{MOBILE}?limit={limit}", headers=alice)

    body = assert_problem(response, 422, "validation_failed")
    assert body["errors"] == [{"field": "limit", "message": message}]


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_inclusive(client, limit):
    alice = customer()
    create(client, alice)
    create(client, alice)

    response = _list(client, alice, limit=limit)

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == min(limit, 2)


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("abc", id="not-base64-json"),
        pytest.param("bm90IGEgY3Vyc29y", id="base64-text"),
        pytest.param("WzEsMiwzXQ", id="base64-list"),
        pytest.param("WyIyMDI2LTAzLTE3VDEwOjAwOjAwIiwxLCJ4Il0", id="forged-scope"),
        pytest.param("a+b/c==", id="bad-characters"),
        pytest.param("x" * 513, id="too-long"),
    ],
)
def test_a_cursor_this_service_did_not_issue_is_422(client, cursor):
    alice = customer()
    create(client, alice)

    response = _list(client, alice, cursor=cursor)

    body = assert_problem(response, 422, "validation_failed")
    assert error_fields(body) == ["cursor"]


def test_a_cursor_issued_for_another_filter_is_422(client):
    alice = customer()
    for _ in range(3):
        create(client, alice)
    cursor = _list(client, alice, limit=1, status="open").json()["meta"]["nextCursor"]
    assert cursor is not None

    unfiltered = _list(client, alice, limit=1, cursor=cursor)
    other_status = _list(client, alice, limit=1, cursor=cursor, status="closed")
    same_filter = _list(client, alice, limit=1, cursor=cursor, status="open")

    assert error_fields(assert_problem(unfiltered, 422, "validation_failed")) == ["cursor"]
    assert error_fields(assert_problem(other_status, 422, "validation_failed")) == ["cursor"]
    assert same_filter.status_code == 200


def test_a_cursor_issued_to_another_customer_is_422(client):
    alice, bob = customer(), customer()
    for _ in range(3):
        create(client, alice)
        create(client, bob)
    alices_cursor = _list(client, alice, limit=1).json()["meta"]["nextCursor"]

    response = _list(client, bob, limit=1, cursor=alices_cursor)

    assert error_fields(assert_problem(response, 422, "validation_failed")) == ["cursor"]


def test_an_admin_queue_cursor_is_422_on_the_mobile_list(client):
    alice = customer()
    for _ in range(3):
        create(client, alice)
    queue = client.get(ADMIN, params={"limit": 1}, headers=known_admin(client))
    assert queue.status_code == 200, queue.text
    cursor = queue.json()["meta"]["nextCursor"]

    response = _list(client, alice, limit=1, cursor=cursor)

    assert error_fields(assert_problem(response, 422, "validation_failed")) == ["cursor"]


def test_unknown_status_filter_or_query_parameter_is_422(client):
    alice = customer()

    response = _list(client, alice, status="pending", sort="createdAt")

    body = assert_problem(response, 422, "validation_failed")
    assert sorted(error_fields(body)) == ["sort", "status"]


def test_status_filter_returns_only_requests_in_that_status(client):
    alice = customer()
    agent = known_admin(client)
    by_status: dict[str, list[int]] = {"open": [], "in_progress": [], "resolved": [], "closed": []}
    for status in ["open", "in_progress", "resolved", "closed", "open", "resolved"]:
        created = create(client, alice)
        if status != "open":
            move_to(client, agent, created["id"], status)
        by_status[status].append(created["id"])
    create(client, customer())

    for status, ids in by_status.items():
        pages = _walk(client, alice, status=status, limit=1)
        items = [item for page in pages for item in page]
        assert [item["id"] for item in items] == sorted(ids, reverse=True), status
        assert {item["status"] for item in items} == {status}


# -- what mobile responses look like ------------------------------------------------------


def test_no_uuid_anywhere_in_mobile_responses(client):
    alice = customer()
    agent = known_admin(client)
    other = known_admin(client, name="Other Agent")
    created = client.post(
        MOBILE,
        json={"category": "payment", "subject": "Charged twice", "message": "Twice!"},
        headers=alice,
    )
    request_id = created.json()["data"]["id"]
    assigned = client.patch(
        f"{ADMIN}/{request_id}", json={"assignedAdminId": admin_id_of(other)}, headers=agent
    )
    assert assigned.status_code == 200, assigned.text
    reply(client, agent, request_id, "Refunded.", api=ADMIN)

    responses = [
        created,
        client.get(f"{MOBILE}/{request_id}", headers=alice),
        client.get(MOBILE, headers=alice),
        client.post(f"{MOBILE}/{request_id}/messages", json={"body": "Thanks"}, headers=alice),
    ]
    move_to(client, agent, request_id, "resolved")
    responses += [
        client.get(f"{MOBILE}/{request_id}", headers=alice),
        client.get(MOBILE, params={"status": "resolved"}, headers=alice),
    ]

    uuid_in_text = re.compile(UUID_PATTERN)
    for response in responses:
        assert response.status_code in (200, 201), response.text
        assert not uuid_in_text.search(response.text), response.text
        assert admin_id_of(agent) not in response.text
        assert admin_id_of(other) not in response.text
    detail = responses[4].json()["data"]
    assert detail["isAssigned"] is True
    assert "assignedAdminId" not in detail
    assert all("authorId" not in message for message in detail["messages"])


def test_timestamps_are_utc_with_milliseconds(client):
    alice = customer()
    agent = known_admin(client)
    before = datetime.now(UTC) - timedelta(seconds=1)
    created = create(client, alice)
    reply(client, agent, created["id"], "Looking.", api=ADMIN)
    move_to(client, agent, created["id"], "resolved")
    resolved = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]
    move_to(client, agent, created["id"], "closed")
    closed = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]
    listed = _list(client, alice).json()["data"][0]
    after = datetime.now(UTC) + timedelta(seconds=1)

    values = [resolved["resolvedAt"], closed["closedAt"]]
    for document in (resolved, closed, listed):
        values += [document[key] for key in TIMESTAMP_KEYS if document[key] is not None]
    values += [message["createdAt"] for message in closed["messages"]]
    assert len(values) >= 16
    for value in values:
        assert re.fullmatch(TIMESTAMP_PATTERN, value), value
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before <= moment <= after, value
    assert closed["allowedActions"] == ["rate"]  # closed unresolved: 14 days to rate
