"""Read state and unread counts (decisions, "Round 2 / Read state and unread counts").

Each customer has, per request, a read marker that only moves forward and the public staff
messages after it; over all their requests, a badge (``GET /api/mobile/unread``) kept in
``customer_inboxes`` in the transaction of every change. Each test runs on SQLite and, when
configured, PostgreSQL, and asserts the status, the body and what is stored.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import sqlalchemy as sa

from support_requests.domain.clock import now_ms
from support_requests.domain.read_state import (
    Badge,
    BadgeDelta,
    ReadState,
    after_customer_reply,
    after_staff_reply,
    moves_forward,
)
from support_requests.storage import schema
from support_requests.storage.models import Base
from tests.helpers import (
    ADMIN,
    MOBILE,
    admin,
    admin_principal,
    assert_problem,
    assert_same_not_found,
    create,
    customer,
    customer_principal,
    error_fields,
    reply,
    snapshot,
    stored_request,
    stored_rows,
    with_desk,
)

UNREAD = "/api/mobile/unread"


def mark_read(client: Any, headers: dict[str, str], request_id: int, **body: Any) -> Any:
    """POST the read marker (``lastReadMessageId=N``, or nothing for everything so far)."""
    return client.post(f"{MOBILE}/{request_id}/read", json=body, headers=headers)


def read_ok(client: Any, headers: dict[str, str], request_id: int, **body: Any) -> dict[str, Any]:
    response = mark_read(client, headers, request_id, **body)
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "Read state updated successfully"
    return dict(response.json()["data"])


def badge(client: Any, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(UNREAD, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def detail(client: Any, headers: dict[str, str], request_id: int) -> dict[str, Any]:
    response = client.get(f"{MOBILE}/{request_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def inbox_rows(db: Any) -> dict[str, tuple[int, int]]:
    """Every stored badge, by customer."""
    table = Base.metadata.tables["customer_inboxes"]
    with db.connect() as connection:
        rows = connection.execute(sa.select(table)).all()
    return {row.customer_id: (row.unread_count, row.requests_with_unread) for row in rows}


def sums_by_customer(db: Any) -> dict[str, tuple[int, int]]:
    """The badge each customer's requests add up to (customers with unread only)."""
    table = Base.metadata.tables["support_requests"]
    with db.connect() as connection:
        rows = connection.execute(
            sa.select(
                table.c.customer_id,
                sa.func.sum(table.c.unread_count),
                sa.func.count(),
            )
            .where(table.c.unread_count > 0)
            .group_by(table.c.customer_id)
        ).all()
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}


def customer_id(headers: dict[str, str]) -> str:
    import jwt

    token = headers["Authorization"].split()[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def staff_replies(client: Any, request_id: int, count: int) -> list[int]:
    """``count`` public staff replies: their message ids."""
    staff = admin()
    ids = []
    for n in range(count):
        shown = reply(client, staff, request_id, f"Staff answer {n}.", api=ADMIN)
        ids.append(shown["messages"][-1]["id"])
    return ids


def add_internal_note(client: Any, request_id: int) -> int:
    """A staff-only note in the thread, through the API; its message id."""
    response = client.post(
        f"/api/admin/support-requests/{request_id}/messages",
        json={"body": "Internal: refund approved.", "internal": True},
        headers=admin(),
    )
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["messages"][-1]["id"])


# -- the rules, without a database ------------------------------------------------------------


def test_the_marker_moves_only_to_a_later_message() -> None:
    assert moves_forward(ReadState(None, 2), 5)
    assert moves_forward(ReadState(5, 0), 6)
    assert not moves_forward(ReadState(5, 0), 5)
    assert not moves_forward(ReadState(5, 0), 4)
    assert not moves_forward(ReadState(5, 0), None)


def test_the_badge_moves_by_the_requests_change_and_counts_requests_with_unread() -> None:
    assert BadgeDelta.between(ReadState(None, 0), after_staff_reply(ReadState(None, 0))) == (
        BadgeDelta(1, 1)
    )
    assert BadgeDelta.between(ReadState(3, 1), after_staff_reply(ReadState(3, 1))) == (
        BadgeDelta(1, 0)
    )
    assert BadgeDelta.between(ReadState(3, 2), after_customer_reply(ReadState(3, 2), 9)) == (
        BadgeDelta(-2, -1)
    )
    assert not BadgeDelta.between(ReadState(3, 0), after_customer_reply(ReadState(3, 0), 9))
    assert after_customer_reply(ReadState(3, 2), 9) == ReadState(9, 0)


# -- counting -------------------------------------------------------------------------------


def test_a_staff_reply_is_unread_until_the_customer_reads_it(client: Any, db: Any) -> None:
    me = customer()
    request = create(client, me)
    assert (request["unreadCount"], request["lastReadMessageId"]) == (0, None)
    (answer,) = staff_replies(client, request["id"], 1)

    shown = detail(client, me, request["id"])
    assert (shown["unreadCount"], shown["lastReadMessageId"]) == (1, None)
    listed = client.get(MOBILE, headers=me).json()["data"]
    assert [(i["id"], i["unreadCount"], i["lastReadMessageId"]) for i in listed] == [
        (request["id"], 1, None)
    ]
    assert badge(client, me) == {"unreadCount": 1, "requestsWithUnread": 1}
    stored = stored_request(db, request["id"])
    assert (stored["customer_last_read_message_id"], stored["unread_count"]) == (None, 1)
    assert inbox_rows(db) == {customer_id(me): (1, 1)}

    assert read_ok(client, me, request["id"], lastReadMessageId=answer) == {
        "lastReadMessageId": answer,
        "unreadCount": 0,
    }
    assert badge(client, me) == {"unreadCount": 0, "requestsWithUnread": 0}
    shown = detail(client, me, request["id"])
    assert (shown["unreadCount"], shown["lastReadMessageId"]) == (0, answer)
    stored = stored_request(db, request["id"])
    assert (stored["customer_last_read_message_id"], stored["unread_count"]) == (answer, 0)
    assert inbox_rows(db) == {customer_id(me): (0, 0)}


def test_a_staff_reply_adds_one_to_the_request_and_the_badge(client: Any, db: Any) -> None:
    me = customer()
    request = create(client, me)
    staff_replies(client, request["id"], 3)
    assert detail(client, me, request["id"])["unreadCount"] == 3
    assert badge(client, me) == {"unreadCount": 3, "requestsWithUnread": 1}
    assert stored_request(db, request["id"])["unread_count"] == 3
    assert inbox_rows(db) == {customer_id(me): (3, 1)}


def test_a_customer_reply_marks_the_thread_read(client: Any, db: Any) -> None:
    me = customer()
    request = create(client, me)
    staff_replies(client, request["id"], 2)
    shown = reply(client, me, request["id"], "Thanks, trying that now.")
    own = shown["messages"][-1]["id"]
    assert (shown["unreadCount"], shown["lastReadMessageId"]) == (0, own)
    assert badge(client, me) == {"unreadCount": 0, "requestsWithUnread": 0}
    stored = stored_request(db, request["id"])
    assert (stored["customer_last_read_message_id"], stored["unread_count"]) == (own, 0)
    assert inbox_rows(db) == {customer_id(me): (0, 0)}


def test_the_customers_own_messages_never_count(client: Any, db: Any) -> None:
    me = customer()
    request = create(client, me)
    reply(client, me, request["id"], "One more thing.")
    reply(client, me, request["id"], "And another.")
    assert detail(client, me, request["id"])["unreadCount"] == 0
    assert badge(client, me) == {"unreadCount": 0, "requestsWithUnread": 0}
    # Nothing ever was unread: no badge row was needed.
    assert inbox_rows(db) == {}


def test_the_badge_counts_over_all_the_customers_requests(client: Any, db: Any) -> None:
    me, someone_else = customer(), customer()
    first, second, third = (create(client, me) for _ in range(3))
    staff_replies(client, first["id"], 2)
    staff_replies(client, second["id"], 1)
    assert badge(client, me) == {"unreadCount": 3, "requestsWithUnread": 2}
    assert badge(client, someone_else) == {"unreadCount": 0, "requestsWithUnread": 0}
    listed = {i["id"]: i["unreadCount"] for i in client.get(MOBILE, headers=me).json()["data"]}
    assert listed == {first["id"]: 2, second["id"]: 1, third["id"]: 0}

    read_ok(client, me, first["id"])
    assert badge(client, me) == {"unreadCount": 1, "requestsWithUnread": 1}
    assert inbox_rows(db) == {customer_id(me): (1, 1)} == sums_by_customer(db)


def test_an_internal_note_is_neither_read_nor_unread(client: Any, db: Any) -> None:
    me = customer()
    request = create(client, me)
    note = add_internal_note(client, request["id"])
    (answer,) = staff_replies(client, request["id"], 1)
    assert note < answer
    assert badge(client, me) == {"unreadCount": 1, "requestsWithUnread": 1}
    # Everything so far is the latest message the customer sees, never the note.
    assert read_ok(client, me, request["id"]) == {"lastReadMessageId": answer, "unreadCount": 0}
    later_note = add_internal_note(client, request["id"])
    assert read_ok(client, me, request["id"]) == {"lastReadMessageId": answer, "unreadCount": 0}
    assert stored_request(db, request["id"])["customer_last_read_message_id"] == answer
    assert later_note > answer


# -- the marker -----------------------------------------------------------------------------


def test_the_marker_only_moves_forward(client: Any, db: Any) -> None:
    me = customer()
    request = create(client, me)
    first, second = staff_replies(client, request["id"], 2)
    assert read_ok(client, me, request["id"], lastReadMessageId=second) == {
        "lastReadMessageId": second,
        "unreadCount": 0,
    }
    before = snapshot(db, request["id"])
    inbox = inbox_rows(db)
    # An older message, the same one, or everything so far: the current state, nothing written.
    for body in ({"lastReadMessageId": first}, {"lastReadMessageId": second}, {}):
        assert read_ok(client, me, request["id"], **body) == {
            "lastReadMessageId": second,
            "unreadCount": 0,
        }
    assert snapshot(db, request["id"]) == before
    assert inbox_rows(db) == inbox


def test_marking_an_earlier_message_leaves_later_staff_messages_unread(
    client: Any, db: Any
) -> None:
    me = customer()
    request = create(client, me)
    first, _second, _third = staff_replies(client, request["id"], 3)
    assert read_ok(client, me, request["id"], lastReadMessageId=first) == {
        "lastReadMessageId": first,
        "unreadCount": 2,
    }
    assert badge(client, me) == {"unreadCount": 2, "requestsWithUnread": 1}
    stored = stored_request(db, request["id"])
    assert (stored["customer_last_read_message_id"], stored["unread_count"]) == (first, 2)
    assert inbox_rows(db) == {customer_id(me): (2, 1)}


def test_the_customers_own_message_is_a_valid_marker(client: Any, db: Any) -> None:
    me = customer()
    request = create(client, me)
    opening = request["messages"][0]["id"]
    staff_replies(client, request["id"], 2)
    assert read_ok(client, me, request["id"], lastReadMessageId=opening) == {
        "lastReadMessageId": opening,
        "unreadCount": 2,
    }
    assert stored_request(db, request["id"])["customer_last_read_message_id"] == opening


def test_an_empty_body_marks_everything_so_far_read(client: Any, db: Any) -> None:
    me = customer()
    request = create(client, me)
    *_, last = staff_replies(client, request["id"], 3)
    assert read_ok(client, me, request["id"]) == {"lastReadMessageId": last, "unreadCount": 0}
    assert badge(client, me) == {"unreadCount": 0, "requestsWithUnread": 0}
    stored = stored_request(db, request["id"])
    assert (stored["customer_last_read_message_id"], stored["unread_count"]) == (last, 0)
    assert inbox_rows(db) == {customer_id(me): (0, 0)}


def test_a_message_outside_the_customers_thread_is_422_on_last_read_message_id(
    client: Any, db: Any
) -> None:
    me = customer()
    request = create(client, me)
    other = create(client, me)
    staff_replies(client, request["id"], 1)
    note = add_internal_note(client, request["id"])
    before = snapshot(db, request["id"])
    inbox = inbox_rows(db)
    for message_id in (other["messages"][0]["id"], note, 10**12):
        body = assert_problem(
            mark_read(client, me, request["id"], lastReadMessageId=message_id),
            422,
            "validation_failed",
        )
        assert error_fields(body) == ["lastReadMessageId"]
    assert snapshot(db, request["id"]) == before
    assert inbox_rows(db) == inbox


def test_a_marker_that_breaks_the_schema_is_422(client: Any) -> None:
    me = customer()
    request = create(client, me)
    for body in ({"lastReadMessageId": 0}, {"lastReadMessageId": "7"}, {"extra": 1}):
        response = client.post(f"{MOBILE}/{request['id']}/read", json=body, headers=me)
        assert_problem(response, 422, "validation_failed")


def test_another_customers_request_is_404_like_the_detail(client: Any, db: Any) -> None:
    owner, me = customer(), customer()
    request = create(client, owner)
    (answer,) = staff_replies(client, request["id"], 1)
    before = snapshot(db, request["id"])
    trace = {**me, "X-Request-ID": uuid.uuid4().hex}
    foreign = mark_read(client, trace, request["id"], lastReadMessageId=answer)
    missing = mark_read(client, trace, request["id"] + 1000, lastReadMessageId=answer)
    assert_same_not_found(foreign, request["id"], missing, request["id"] + 1000)
    assert snapshot(db, request["id"]) == before
    assert badge(client, me) == {"unreadCount": 0, "requestsWithUnread": 0}


def test_an_admin_token_may_not_mark_read(client: Any) -> None:
    request = create(client, customer())
    assert_problem(mark_read(client, admin(), request["id"]), 403, "forbidden")
    assert_problem(client.get(UNREAD, headers=admin()), 403, "forbidden")


def test_a_read_bumps_the_versions_but_not_updated_at_and_records_no_history(
    client: Any, db: Any
) -> None:
    me = customer()
    request = create(client, me)
    staff_replies(client, request["id"], 1)
    before = stored_request(db, request["id"])
    events = stored_rows(db, "request_events", request["id"])
    read_ok(client, me, request["id"])
    after = stored_request(db, request["id"])
    assert after["version"] == before["version"] + 1
    assert after["customer_version"] == before["customer_version"] + 1
    assert after["updated_at"] == before["updated_at"]
    assert stored_rows(db, "request_events", request["id"]) == events


def test_staff_see_the_customers_read_marker(client: Any, db: Any) -> None:
    me, staff = customer(), admin()
    request = create(client, me)
    (answer,) = staff_replies(client, request["id"], 1)
    shown = client.get(f"{ADMIN}/{request['id']}", headers=staff).json()["data"]
    assert shown["customerLastReadMessageId"] is None
    read_ok(client, me, request["id"], lastReadMessageId=answer)
    shown = client.get(f"{ADMIN}/{request['id']}", headers=staff).json()["data"]
    assert shown["customerLastReadMessageId"] == answer
    queue = client.get(ADMIN, headers=staff).json()["data"]
    assert [(i["id"], i["customerLastReadMessageId"]) for i in queue] == [(request["id"], answer)]
    assert stored_request(db, request["id"])["customer_last_read_message_id"] == answer


def test_a_read_does_not_reshuffle_the_queue_by_updated_at(client: Any) -> None:
    me, staff = customer(), admin()
    older, newer = create(client, me), create(client, me)
    staff_replies(client, older["id"], 1)
    staff_replies(client, newer["id"], 1)
    order = [i["id"] for i in client.get(f"{ADMIN}?sort=-updatedAt", headers=staff).json()["data"]]
    read_ok(client, me, older["id"])
    after = [i["id"] for i in client.get(f"{ADMIN}?sort=-updatedAt", headers=staff).json()["data"]]
    assert after == order == [newer["id"], older["id"]]


# -- tags -----------------------------------------------------------------------------------


def tags(client: Any, headers: dict[str, str], request_id: int) -> tuple[str, str, str]:
    """The mobile detail's, list's and badge's current ``ETag``s."""
    return (
        client.get(f"{MOBILE}/{request_id}", headers=headers).headers["ETag"],
        client.get(MOBILE, headers=headers).headers["ETag"],
        client.get(UNREAD, headers=headers).headers["ETag"],
    )


def test_a_read_changes_the_mobile_detail_list_and_unread_tags(client: Any) -> None:
    me = customer()
    request = create(client, me)
    staff_replies(client, request["id"], 1)
    before = tags(client, me, request["id"])
    read_ok(client, me, request["id"])
    after = tags(client, me, request["id"])
    assert all(old != new for old, new in zip(before, after, strict=True)), (before, after)


def test_a_staff_reply_changes_the_mobile_detail_list_and_unread_tags(client: Any) -> None:
    me = customer()
    request = create(client, me)
    before = tags(client, me, request["id"])
    staff_replies(client, request["id"], 1)
    after = tags(client, me, request["id"])
    assert all(old != new for old, new in zip(before, after, strict=True)), (before, after)


def test_a_read_that_does_not_move_the_marker_changes_no_tag(client: Any) -> None:
    me = customer()
    request = create(client, me)
    first, _second = staff_replies(client, request["id"], 2)
    read_ok(client, me, request["id"])
    before = tags(client, me, request["id"])
    read_ok(client, me, request["id"], lastReadMessageId=first)
    read_ok(client, me, request["id"])
    assert tags(client, me, request["id"]) == before
    detail_tag, list_tag, unread_tag = before
    for path, tag in (
        (f"{MOBILE}/{request['id']}", detail_tag),
        (MOBILE, list_tag),
        (UNREAD, unread_tag),
    ):
        response = client.get(path, headers={**me, "If-None-Match": tag})
        assert response.status_code == 304, path
        assert response.content == b""


def test_the_badge_answers_304_while_unchanged(client: Any) -> None:
    me = customer()
    request = create(client, me)
    first = client.get(UNREAD, headers=me)
    assert first.headers["Cache-Control"] == "private, no-cache"
    etag = first.headers["ETag"]
    unchanged = client.get(UNREAD, headers={**me, "If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.headers["ETag"] == etag
    staff_replies(client, request["id"], 1)
    changed = client.get(UNREAD, headers={**me, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["data"] == {"unreadCount": 1, "requestsWithUnread": 1}
    assert changed.headers["ETag"] != etag


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_staff_replies_and_reads_keep_the_badge_equal_to_its_requests(
    database_url: str, db: Any
) -> None:
    """Many staff replies to different requests of one customer, and reads of them, at the
    same moment: the badge ends equal to the sum over the customer's requests."""
    me = customer_principal()
    staff = [admin_principal() for _ in range(4)]
    rounds = 6

    async def work(desk: Any) -> Badge:
        requests = [
            (await desk.create_request(me, category="other", subject=f"S{n}", message="Hi")).row.id
            for n in range(8)
        ]
        chance = random.Random(20261206)
        for _ in range(rounds):
            calls = [
                desk.reply_as_admin(staff[n % len(staff)], request_id, f"Answer {n}")
                for n, request_id in enumerate(requests)
            ]
            calls += [
                desk.mark_read(me, request_id, None)
                for request_id in chance.sample(requests, k=len(requests) // 2)
            ]
            chance.shuffle(calls)
            await asyncio.gather(*calls)
        result: Badge = await desk.badge(me)
        return result

    shown = with_desk(database_url, work)
    stored = inbox_rows(db)[me.sub]
    assert (
        stored == sums_by_customer(db)[me.sub] == (shown.unread_count, shown.requests_with_unread)
    )
    assert shown.unread_count > 0


# -- migration ------------------------------------------------------------------------------


def test_migration_0003_backfills_markers_unread_counts_and_badges(
    database_url: str, db: Any
) -> None:
    """A database at 0002 whose threads mix customer and staff messages: after the upgrade,
    each marker is the customer's latest message, each unread count the staff messages after
    it, and each badge the sum over its customer's requests."""
    Base.metadata.drop_all(db)
    with db.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    schema.upgrade(database_url, "0002")
    # request id -> (customer, its thread's authors in order)
    threads = {
        1: ("alice", ["customer", "admin", "customer", "admin", "admin"]),
        2: ("alice", ["customer"]),
        3: ("alice", ["customer", "admin", "admin"]),
        4: ("bob", ["customer", "admin"]),
        5: ("carol", ["customer", "admin", "customer"]),
    }
    moment = now_ms()
    message_id = 0
    expected: dict[int, tuple[int, int]] = {}
    with db.begin() as connection:
        for request_id, (owner, authors) in threads.items():
            connection.execute(
                sa.text(
                    "INSERT INTO support_requests (id, customer_id, category, subject, status,"
                    " created_at, updated_at, version)"
                    " VALUES (:id, :owner, 'other', 'Before read state', 'open', :at, :at, 3)"
                ),
                {"id": request_id, "owner": owner, "at": moment},
            )
            marker, unread = 0, 0
            for author in authors:
                message_id += 10
                connection.execute(
                    sa.text(
                        "INSERT INTO messages (id, request_id, author_type, author_id, body,"
                        " created_at) VALUES (:id, :request, :author, :author, 'Hi', :at)"
                    ),
                    {"id": message_id, "request": request_id, "author": author, "at": moment},
                )
                if author == "customer":
                    marker, unread = message_id, 0
                else:
                    unread += 1
            expected[request_id] = (marker, unread)

    schema.upgrade(database_url, "0003")

    for request_id, (marker, unread) in expected.items():
        stored = stored_request(db, request_id)
        assert (stored["customer_last_read_message_id"], stored["unread_count"]) == (
            marker,
            unread,
        ), request_id
        assert stored["customer_version"] == stored["version"] == 3
    assert expected[1] == (30, 2) and expected[3] == (70, 2) and expected[5] == (140, 0)
    assert inbox_rows(db) == {"alice": (4, 2), "bob": (1, 1)} == sums_by_customer(db)
