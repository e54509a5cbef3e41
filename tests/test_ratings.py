"""Ratings (CSAT), end to end: ``PUT /api/mobile/support-requests/{id}/rating``.

The lifecycle table decides which statuses take a rating; the 14 days run from the last
resolution (or the closing of a request closed unresolved), read from the app's injected
clock. Each test asserts status, body and stored state, on both databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from support_requests.domain.clock import now_ms
from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from tests.helpers import (
    ADMIN,
    MOBILE,
    admin,
    assert_problem,
    assert_same_not_found,
    create,
    customer,
    error_fields,
    move_to,
    reply,
    snapshot,
    stored_request,
    stored_rows,
)

WINDOW = timedelta(days=14)


class Clock:
    """The app's time, moved by the test."""

    def __init__(self) -> None:
        self.now = now_ms()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: Settings, clock: Clock) -> Iterator[Any]:
    """An HTTP client of a fresh app whose lifecycle reads ``clock``."""
    app = create_app(settings, clock=clock)
    with app.test_client() as test_client:
        yield test_client


def rate(client: Any, headers: dict[str, str], request_id: int, **body: Any) -> Any:
    return client.put(f"{MOBILE}/{request_id}/rating", json=body, headers=headers)


def resolved_request(client: Any, owner: dict[str, str], staff: dict[str, str]) -> int:
    request_id = int(create(client, owner)["id"])
    move_to(client, staff, request_id, "resolved")
    return request_id


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


def test_rating_a_resolved_request_stores_it_and_answers_the_detail(client, db, clock):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    clock.advance(timedelta(hours=2))

    response = rate(client, owner, request_id, score=5, comment="  Fixed fast, thanks!  ")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "Support request rated successfully"
    data = body["data"]
    assert data["rating"] == {
        "score": 5,
        "comment": "Fixed fast, thanks!",
        "ratedAt": iso(clock.now),
    }
    assert data["status"] == "resolved"
    assert data["updatedAt"] == iso(clock.now)
    assert data["allowedActions"] == ["reply", "rate"]
    stored = stored_request(db, request_id)
    assert (stored["rating_score"], stored["rating_comment"], stored["rated_at"]) == (
        5,
        "Fixed fast, thanks!",
        clock.now,
    )
    assert stored["status"] == "resolved"
    rated = stored_rows(db, "request_events", request_id)[-1]
    assert rated["type"] == "rated"
    assert rated["actor_type"] == "customer"
    assert rated["changes"] == {
        "score": {"from": None, "to": 5},
        "comment": {"from": None, "to": "Fixed fast, thanks!"},
    }


def test_rating_again_replaces_the_rating(client, db, clock):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    assert rate(client, owner, request_id, score=2, comment="Slow.").status_code == 200
    clock.advance(timedelta(days=1))

    response = rate(client, owner, request_id, score=4)

    assert response.status_code == 200, response.text
    assert response.json()["data"]["rating"] == {
        "score": 4,
        "comment": None,
        "ratedAt": iso(clock.now),
    }
    stored = stored_request(db, request_id)
    assert (stored["rating_score"], stored["rating_comment"]) == (4, None)
    events = [e for e in stored_rows(db, "request_events", request_id) if e["type"] == "rated"]
    assert events[-1]["changes"] == {
        "score": {"from": 2, "to": 4},
        "comment": {"from": "Slow.", "to": None},
    }


@pytest.mark.parametrize("status", ["open", "in_progress"])
def test_rating_a_request_not_yet_resolved_is_409_rating_not_allowed(client, db, status):
    owner = customer()
    request_id = create(client, owner)["id"]
    if status != "open":
        move_to(client, admin(), request_id, status)
    before = snapshot(db, request_id)

    response = rate(client, owner, request_id, score=3)

    body = assert_problem(response, 409, "rating_not_allowed")
    assert body["detail"] == (
        f"Support request {request_id} can be rated once it is resolved or closed."
    )
    assert snapshot(db, request_id) == before
    detail = client.get(f"{MOBILE}/{request_id}", headers=owner).json()["data"]
    assert "rate" not in detail["allowedActions"]
    assert detail["rating"] is None


@pytest.mark.parametrize(
    ("after", "allowed"),
    [(timedelta(days=13, hours=23), True), (WINDOW + timedelta(milliseconds=1), False)],
    ids=["13d23h", "14d+1ms"],
)
def test_rating_window_is_14_days_from_the_resolution(client, db, clock, after, allowed):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    clock.advance(after)
    before = snapshot(db, request_id)

    detail = client.get(f"{MOBILE}/{request_id}", headers=owner).json()["data"]
    response = rate(client, owner, request_id, score=1)

    assert ("rate" in detail["allowedActions"]) is allowed
    if allowed:
        assert response.status_code == 200, response.text
        assert stored_request(db, request_id)["rating_score"] == 1
    else:
        body = assert_problem(response, 409, "rating_not_allowed")
        assert body["detail"] == (
            f"Support request {request_id} can be rated only within 14 days of its resolution."
        )
        assert snapshot(db, request_id) == before


@pytest.mark.parametrize(
    ("after", "allowed"),
    [(timedelta(days=13, hours=23), True), (WINDOW + timedelta(milliseconds=1), False)],
    ids=["13d23h", "14d+1ms"],
)
def test_a_request_closed_without_resolution_is_rated_from_its_closing(
    client, db, clock, after, allowed
):
    owner = customer()
    request_id = create(client, owner)["id"]
    clock.advance(timedelta(days=3))
    move_to(client, admin(), request_id, "closed")
    assert stored_request(db, request_id)["last_resolved_at"] is None
    clock.advance(after)

    response = rate(client, owner, request_id, score=2)

    if allowed:
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "closed"
        assert stored_request(db, request_id)["rating_score"] == 2
    else:
        assert_problem(response, 409, "rating_not_allowed")
        assert stored_request(db, request_id)["rating_score"] is None


def test_a_closed_request_is_rated_from_its_resolution_not_its_closing(client, db, clock):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    clock.advance(timedelta(days=10))
    move_to(client, staff, request_id, "closed")
    clock.advance(timedelta(days=4, milliseconds=1))

    response = rate(client, owner, request_id, score=5)

    assert_problem(response, 409, "rating_not_allowed")
    assert stored_request(db, request_id)["rating_score"] is None


def test_a_reopen_keeps_the_rating_and_the_next_resolution_restarts_the_window(client, db, clock):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    rated = rate(client, owner, request_id, score=2, comment="Not fixed.").json()["data"]
    clock.advance(timedelta(days=1))

    reopened = reply(client, owner, request_id, "It crashes again.")

    assert reopened["status"] == "open"
    assert reopened["rating"] == rated["rating"]
    assert reopened["allowedActions"] == ["reply"]
    assert_problem(rate(client, owner, request_id, score=3), 409, "rating_not_allowed")
    stored = stored_request(db, request_id)
    assert (stored["rating_score"], stored["rating_comment"]) == (2, "Not fixed.")
    assert stored["last_resolved_at"] is None

    clock.advance(timedelta(days=20))  # 21 days after the first resolution
    move_to(client, staff, request_id, "resolved")
    clock.advance(timedelta(days=13, hours=23))
    response = rate(client, owner, request_id, score=5)

    assert response.status_code == 200, response.text
    assert response.json()["data"]["rating"]["score"] == 5
    assert stored_request(db, request_id)["rating_score"] == 5


def test_rating_another_customers_request_is_the_same_404_as_a_missing_one(client, db):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    before = snapshot(db, request_id)

    stranger = {**customer(), "X-Request-ID": "rating-trace"}

    foreign = rate(client, stranger, request_id, score=5)
    missing = rate(client, stranger, request_id + 1000, score=5)

    assert_same_not_found(foreign, request_id, missing, request_id + 1000)
    assert snapshot(db, request_id) == before


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["score"]),
        ({"score": 0}, ["score"]),
        ({"score": 6}, ["score"]),
        ({"score": "5"}, ["score"]),
        ({"score": 4.5}, ["score"]),
        ({"score": None}, ["score"]),
        ({"score": 5, "comment": " \n\t "}, ["comment"]),
        ({"score": 5, "comment": "a\x00b"}, ["comment"]),
        ({"score": 5, "comment": "x" * 1001}, ["comment"]),
        ({"score": 5, "comment": None}, ["comment"]),
        ({"score": 5, "stars": 5}, ["stars"]),
        ({"score": 9, "comment": ""}, ["score", "comment"]),
    ],
    ids=[
        "no-score",
        "zero",
        "six",
        "string",
        "fraction",
        "null",
        "blank-comment",
        "nul",
        "1001-chars",
        "null-comment",
        "unknown-field",
        "every-field",
    ],
)
def test_a_bad_rating_body_is_422_with_every_field(client, db, body, fields):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    before = snapshot(db, request_id)

    response = client.put(f"{MOBILE}/{request_id}/rating", json=body, headers=owner)

    problem = assert_problem(response, 422, "validation_failed")
    assert sorted(error_fields(problem)) == sorted(fields)
    assert snapshot(db, request_id) == before


def test_a_comment_of_1000_characters_after_trimming_is_stored_trimmed(client, db):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)

    response = rate(client, owner, request_id, score=3, comment="  " + "é" * 1000 + "\n")

    assert response.status_code == 200, response.text
    assert stored_request(db, request_id)["rating_comment"] == "é" * 1000


def test_an_admin_token_may_not_rate(client, db):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)

    assert_problem(rate(client, staff, request_id, score=5), 403, "forbidden")
    assert stored_request(db, request_id)["rating_score"] is None


def test_every_view_carries_the_rating_or_null(client):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    unrated = create(client, owner)["id"]
    rating = rate(client, owner, request_id, score=4, comment="Good.").json()["data"]["rating"]

    mobile_items = {i["id"]: i for i in client.get(MOBILE, headers=owner).json()["data"]}
    queue_items = {i["id"]: i for i in client.get(ADMIN, headers=staff).json()["data"]}
    views = {
        "mobile-detail": client.get(f"{MOBILE}/{request_id}", headers=owner).json()["data"],
        "mobile-list": mobile_items[request_id],
        "admin-detail": client.get(f"{ADMIN}/{request_id}", headers=staff).json()["data"],
        "admin-queue": queue_items[request_id],
    }

    for name, view in views.items():
        assert view["rating"] == rating, name
    assert mobile_items[unrated]["rating"] is None
    assert queue_items[unrated]["rating"] is None
    assert "rate" not in views["admin-detail"]["allowedActions"]


# -- ETags ---------------------------------------------------------------------------


def test_a_rating_changes_the_mobile_and_admin_tags(client):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    tags = {
        "mobile": client.get(f"{MOBILE}/{request_id}", headers=owner).headers["etag"],
        "admin": client.get(f"{ADMIN}/{request_id}", headers=staff).headers["etag"],
        "list": client.get(MOBILE, headers=owner).headers["etag"],
    }

    rate(client, owner, request_id, score=5)

    for name, path, headers in (
        ("mobile", f"{MOBILE}/{request_id}", owner),
        ("admin", f"{ADMIN}/{request_id}", staff),
        ("list", MOBILE, owner),
    ):
        response = client.get(path, headers={**headers, "If-None-Match": tags[name]})
        assert response.status_code == 200, name
        assert response.headers["etag"] != tags[name], name


def test_a_detail_revalidated_after_the_window_closed_is_200_without_rate(client, clock):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    inside = client.get(f"{MOBILE}/{request_id}", headers=owner)
    assert inside.json()["data"]["allowedActions"] == ["reply", "rate"]
    still = client.get(
        f"{MOBILE}/{request_id}", headers={**owner, "If-None-Match": inside.headers["etag"]}
    )
    assert still.status_code == 304
    clock.advance(WINDOW + timedelta(milliseconds=1))

    after = client.get(
        f"{MOBILE}/{request_id}", headers={**owner, "If-None-Match": inside.headers["etag"]}
    )

    assert after.status_code == 200
    assert after.json()["data"]["allowedActions"] == ["reply"]
    assert after.headers["etag"] != inside.headers["etag"]
    current = client.get(
        f"{MOBILE}/{request_id}", headers={**owner, "If-None-Match": after.headers["etag"]}
    )
    assert current.status_code == 304
    # Staff's view shows no window: its tag stays.
    admin_tag = client.get(f"{ADMIN}/{request_id}", headers=staff).headers["etag"]
    clock.advance(timedelta(days=1))
    revalidated = client.get(f"{ADMIN}/{request_id}", headers={**staff, "If-None-Match": admin_tag})
    assert revalidated.status_code == 304


def test_a_list_revalidated_after_the_window_closed_is_200_without_rate(client, clock):
    owner, staff = customer(), admin()
    request_id = resolved_request(client, owner, staff)
    inside = client.get(MOBILE, headers=owner)
    assert inside.json()["data"][0]["allowedActions"] == ["reply", "rate"]
    assert (
        client.get(MOBILE, headers={**owner, "If-None-Match": inside.headers["etag"]}).status_code
        == 304
    )
    clock.advance(WINDOW + timedelta(milliseconds=1))

    after = client.get(MOBILE, headers={**owner, "If-None-Match": inside.headers["etag"]})

    assert after.status_code == 200
    [item] = after.json()["data"]
    assert (item["id"], item["allowedActions"]) == (request_id, ["reply"])
    assert after.headers["etag"] != inside.headers["etag"]
    current = client.get(MOBILE, headers={**owner, "If-None-Match": after.headers["etag"]})
    assert current.status_code == 304
