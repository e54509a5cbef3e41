"""Customer replies: ``POST /api/mobile/support-requests/{id}/messages``."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from support_requests.handlers.app import create_app
from support_requests.storage.database import STATEMENT_OBSERVERS
from support_requests.storage.models import Base
from support_requests.storage.support_desk import REQUEST_COLUMNS, SupportDesk
from tests.helpers import (
    ADMIN,
    MOBILE,
    admin_principal,
    assert_problem,
    assert_same_not_found,
    bearer,
    create,
    customer,
    customer_principal,
    error_fields,
    known_admin,
    mint,
    move_to,
    post_reply,
    reply,
    snapshot,
    stored_request,
    stored_rows,
    with_desk,
)
from tests.servers import migrated_database, running_servers
from tests.test_attachments import png, uploaded

REQUESTS = Base.metadata.tables["support_requests"]
PAST = datetime(2020, 1, 2, 3, 4, 5, 678000)
CONCURRENT_REPLIES = 30


def _backdate(db: sa.Engine, request_id: int) -> None:
    """Move every stored time of the request into the past, so any write shows."""
    with db.begin() as connection:
        connection.execute(
            sa.update(REQUESTS)
            .where(REQUESTS.c.id == request_id)
            .values(created_at=PAST, updated_at=PAST, last_customer_message_at=PAST)
        )


def test_reply_returns_201_with_the_updated_detail(client, db):
    sub = f"customer-{uuid.uuid4().hex}"
    alice = bearer(mint(sub, name="Alex Customer", picture="https://cdn.example.com/a.png"))
    created = create(client, alice)

    response = post_reply(client, alice, created["id"], "Here is more detail about the issue.")

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["message"] == "Reply added successfully"
    data = body["data"]
    first, added = data["messages"]
    assert first == created["messages"][0]
    assert added == {
        "id": added["id"],
        "authorType": "customer",
        "authorName": "Alex Customer",
        "authorImage": "https://cdn.example.com/a.png",
        "body": "Here is more detail about the issue.",
        "attachments": [],
        "createdAt": added["createdAt"],
    }
    assert added["id"] > first["id"]
    assert data == {
        **created,
        "messages": [first, added],
        "lastCustomerMessageAt": added["createdAt"],
        "updatedAt": added["createdAt"],
        "lastReadMessageId": added["id"],
    }
    assert client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"] == data
    stored = stored_rows(db, "messages", created["id"])
    assert [(m["id"], m["author_type"], m["author_id"], m["body"]) for m in stored] == [
        (first["id"], "customer", sub, created["messages"][0]["body"]),
        (added["id"], "customer", sub, "Here is more detail about the issue."),
    ]
    events = stored_rows(db, "request_events", created["id"])
    assert [event["type"] for event in events] == ["created", "customer_replied"]


def test_reply_moves_last_customer_message_at_and_updated_at(client, db):
    alice = customer()
    created = create(client, alice)
    _backdate(db, created["id"])

    data = post_reply(client, alice, created["id"], "Still broken.").json()["data"]

    added = data["messages"][-1]
    assert data["lastCustomerMessageAt"] == added["createdAt"]
    assert data["updatedAt"] == added["createdAt"]
    assert data["createdAt"] == "2020-01-02T03:04:05.678Z"
    assert data["lastAdminMessageAt"] is None
    row = stored_request(db, created["id"])
    assert row["last_customer_message_at"] > PAST
    assert row["updated_at"] == row["last_customer_message_at"]
    assert row["created_at"] == PAST


def test_reply_is_trimmed_and_keeps_the_authors_claims_as_they_were_when_written(client, db):
    sub = f"customer-{uuid.uuid4().hex}"
    before = bearer(mint(sub, name="Alex"))
    after = bearer(mint(sub, name="Alexandra", picture="https://cdn.example.com/new.png"))
    created = create(client, before)

    data = post_reply(client, after, created["id"], "  \n Thanks!\t ").json()["data"]

    assert [(m["authorName"], m["authorImage"], m["body"]) for m in data["messages"]] == [
        ("Alex", None, "It crashes."),
        ("Alexandra", "https://cdn.example.com/new.png", "Thanks!"),
    ]
    assert stored_rows(db, "messages", created["id"])[1]["body"] == "Thanks!"


def test_reply_on_open_or_in_progress_keeps_the_status(client, db):
    alice = customer()
    agent = known_admin(client)
    waiting = create(client, alice)
    working = create(client, alice)
    answered = client.post(
        f"{ADMIN}/{working['id']}/messages", json={"body": "On it."}, headers=agent
    )
    assert answered.json()["data"]["status"] == "in_progress"

    still_open = post_reply(client, alice, waiting["id"], "Any news?").json()["data"]
    still_working = post_reply(client, alice, working["id"], "Thanks.").json()["data"]

    assert (still_open["status"], still_open["isAssigned"]) == ("open", False)
    assert (still_working["status"], still_working["isAssigned"]) == ("in_progress", True)
    assert stored_request(db, waiting["id"])["status"] == "open"
    assert stored_request(db, working["id"])["status"] == "in_progress"


def test_reply_on_resolved_reopens_it(client, db):
    alice = customer()
    agent = known_admin(client)
    created = create(client, alice)
    client.post(f"{ADMIN}/{created['id']}/messages", json={"body": "Fixed?"}, headers=agent)
    resolved = move_to(client, agent, created["id"], "resolved")
    assert resolved["resolvedAt"] is not None and resolved["resolutionNote"]

    response = post_reply(client, alice, created["id"], "No, it still crashes.")

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["status"] == "open"
    assert data["resolvedAt"] is None
    assert data["resolutionNote"] is None
    assert data["isAssigned"] is True
    assert data["allowedActions"] == ["reply"]
    assert data["messages"][-1]["body"] == "No, it still crashes."
    row = stored_request(db, created["id"])
    assert (row["status"], row["resolved_at"], row["resolution_note"]) == ("open", None, None)
    assert row["assigned_admin_id"] is not None
    events = stored_rows(db, "request_events", created["id"])
    assert events[-1]["type"] == "status_changed"
    assert events[-1]["changes"]["status"] == {"from": "resolved", "to": "open"}


def _reply_statements(
    client: Any, headers: dict[str, str], request_id: int, body: str, api: str = MOBILE
) -> Any:
    """The reply's statements (the app's first cleanup of expired uploads runs before it
    serves, so none of its statements lands here)."""
    seen: list[str] = []
    STATEMENT_OBSERVERS.append(lambda sql, _values: seen.append(sql))
    try:
        response = post_reply(client, headers, request_id, body, api=api)
    finally:
        STATEMENT_OBSERVERS.pop()
    assert response.status_code == 201, response.text
    return seen, response.json()["data"]


@pytest.mark.parametrize("author", ["customer", "staff"])
def test_a_reply_on_postgresql_writes_message_change_history_and_badge_in_one_statement(
    client, db, database_url, author
):
    """PostgreSQL: the lock takes the message's id, so the message, the request's change,
    its history entries and the badge are one statement, which also reads the thread the
    answer shows: BEGIN, lock, write, COMMIT. A staff reply that starts work and a
    customer's that reopens write the same rows as ever (several history entries, the
    badge moved)."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite writes in-process, statement by statement")
    alice = customer()
    agent = known_admin(client)
    created = create(client, alice)
    if author == "staff":
        statements, data = _reply_statements(client, agent, created["id"], "On it.", api=ADMIN)
        events = ["created", "admin_replied", "status_changed", "assignment_changed"]
        expected = ("in_progress", 1)
    else:
        post_reply(client, agent, created["id"], "Fixed?", api=ADMIN)
        move_to(client, agent, created["id"], "resolved")
        statements, data = _reply_statements(client, alice, created["id"], "Not fixed.")
        events = ["created", "admin_replied", "status_changed", "assignment_changed"]
        events += ["status_changed", "resolution_note_set", "customer_replied", "status_changed"]
        expected = ("open", 0)

    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    assert len(statements) == 4, statements
    assert "nextval" in statements[1] and "FOR UPDATE" in statements[1]
    write = statements[2]
    for table in ("messages", "support_requests", "request_events", "customer_inboxes"):
        assert table in write
    seen = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]
    assert (seen["status"], seen["unreadCount"]) == expected
    added = data["messages"][-1]
    stored = stored_rows(db, "messages", created["id"])
    assert (stored[-1]["id"], stored[-1]["body"]) == (added["id"], added["body"])
    assert seen["messages"][-1]["id"] == added["id"]
    if author == "customer":
        assert seen == data
        assert data["lastReadMessageId"] == added["id"]
    else:
        assert client.get(f"{ADMIN}/{created['id']}", headers=agent).json()["data"] == data
    assert [event["type"] for event in stored_rows(db, "request_events", created["id"])] == events
    row = stored_request(db, created["id"])
    assert (row["status"], row["unread_count"]) == expected
    with db.connect() as connection:
        badge = connection.execute(
            sa.text("SELECT unread_count FROM customer_inboxes WHERE customer_id = :c"),
            {"c": row["customer_id"]},
        ).scalar()
    assert badge == expected[1]


@pytest.mark.parametrize(
    "case",
    ["customer", "customer-reopens", "customer-renamed", "staff-starts", "staff", "attachments"],
)
def test_a_reply_answers_exactly_the_request_a_read_then_shows(client, db, case):
    """On PostgreSQL a reply without uploads answers with the locked row and the reply's
    changes, and the thread its write read plus the message it wrote, instead of reading
    the detail again: the answer must be the stored request, as a read right after it
    shows it (statuses moved, read state and badge, the
    customer's name from a new token, internal notes hidden from the customer and shown to
    staff, earlier attachments)."""
    sub = f"customer-{uuid.uuid4().hex}"
    alice, agent = bearer(mint(sub, name="Alex Customer")), known_admin(client)
    attachments = [uploaded(client, alice, png())] if case == "attachments" else []
    request_id = create(client, alice, attachments=attachments)["id"]
    if case != "staff-starts":
        staff_note = {"body": "Refund approved.", "internal": True}
        noted = client.post(f"{ADMIN}/{request_id}/messages", json=staff_note, headers=agent)
        assert noted.status_code == 201, noted.text
        reply(client, agent, request_id, "On it.", api=ADMIN)
    if case == "customer-reopens":
        move_to(client, agent, request_id, "resolved")
    who, api = (agent, ADMIN) if case.startswith("staff") else (alice, MOBILE)
    if case == "customer-renamed":
        who = bearer(mint(sub, name="Alex Renamed", picture="https://cdn.example.com/b.png"))

    replied = post_reply(client, who, request_id, "Still broken.", api=api)
    read = client.get(f"{api}/{request_id}", headers=who)

    assert (replied.status_code, read.status_code) == (201, 200), replied.text
    assert replied.json()["data"] == read.json()["data"]
    shown = replied.json()["data"]
    stored = stored_rows(db, "messages", request_id)
    assert [m["id"] for m in shown["messages"]] == [
        m["id"] for m in stored if api == ADMIN or not m["internal"]
    ]
    assert shown["messages"][-1]["body"] == stored[-1]["body"] == "Still broken."
    if case == "attachments":
        assert len(shown["messages"][0]["attachments"]) == 1
    row = stored_request(db, request_id)
    assert row["status"] == shown["status"]
    assert row["status"] == {"customer-reopens": "open", "staff-starts": "in_progress"}.get(
        case, row["status"]
    )
    if case == "customer-renamed":
        assert (row["customer_name"], row["customer_image"]) == (
            "Alex Renamed",
            "https://cdn.example.com/b.png",
        )
        assert shown["messages"][-1]["authorName"] == "Alex Renamed"


def test_a_replys_record_is_the_stored_request_column_for_column(database_url):
    """What the desk answers a reply with (every column of the request, versions and read
    state included, which the ETags, the idempotency answer and the webhooks' payloads are
    made of) is what a read inside the next transaction finds."""

    async def work(desk: SupportDesk) -> None:
        alice, agent = customer_principal(), admin_principal()
        created = await desk.create_request(
            alice, category="technical", subject="App crashes", message="It crashes."
        )
        request_id = created.row.id
        for author, replying in (
            (agent, desk.reply_as_admin),
            (alice, desk.reply_as_customer),
            (agent, desk.reply_as_admin),
        ):
            replied = await replying(author, request_id, "More.")  # type: ignore[operator]
            read = await (
                desk.get_for_admin(agent, request_id)
                if author is agent
                else desk.get_for_customer(alice, request_id)
            )
            # A read's row is its thread's first row: the request's columns come first.
            columns = len(REQUEST_COLUMNS)
            assert tuple(replied.row)[:columns] == tuple(read.row)[:columns]
            assert replied.messages == read.messages
            assert (replied.attachments, replied.rating_open) == (
                read.attachments,
                read.rating_open,
            )
        assert (read.row.version, read.row.customer_version, read.row.unread_count) == (4, 4, 1)

    with_desk(database_url, work)


def test_reply_on_closed_is_400_and_stores_nothing(client, db):
    alice = customer()
    agent = known_admin(client)
    created = create(client, alice)
    move_to(client, agent, created["id"], "closed")
    before = snapshot(db, created["id"])

    response = post_reply(client, alice, created["id"], "Hello?")

    body = assert_problem(response, 400, "request_closed")
    assert str(created["id"]) in body["detail"]
    assert snapshot(db, created["id"]) == before
    detail = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]
    assert detail["status"] == "closed"
    assert detail["allowedActions"] == ["rate"]
    assert len(detail["messages"]) == 1


def test_reply_to_another_customers_request_is_the_same_404_as_a_missing_one(client, db):
    owner, stranger = customer(), customer()
    theirs = create(client, owner)
    missing_id = theirs["id"] + 1000
    before = snapshot(db, theirs["id"])
    trace = {"X-Request-ID": "reply-trace"}

    foreign = post_reply(client, {**stranger, **trace}, theirs["id"], "Let me in.")
    missing = post_reply(client, {**stranger, **trace}, missing_id, "Let me in.")

    assert_same_not_found(foreign, theirs["id"], missing, missing_id)
    assert snapshot(db, theirs["id"]) == before


def test_reply_to_the_largest_id_is_404(client, db):
    response = post_reply(client, customer(), 9223372036854775807, "Anyone?")

    assert_problem(response, 404, "not_found")
    with db.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(REQUESTS)) == 0


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param({}, ["body"], id="missing"),
        pytest.param({"body": ""}, ["body"], id="empty"),
        pytest.param({"body": " \n\t\u00a0 "}, ["body"], id="whitespace"),
        pytest.param({"body": "b" * 5001}, ["body"], id="too-long"),
        pytest.param({"body": "   " + "b" * 5001 + "   "}, ["body"], id="too-long-trimmed"),
        pytest.param({"body": "a\u0000b"}, ["body"], id="nul"),
        pytest.param({"body": 5}, ["body"], id="number"),
        pytest.param({"body": None}, ["body"], id="null"),
        pytest.param({"body": {"text": "hi"}}, ["body"], id="object"),
        pytest.param({"body": "hi", "status": "closed"}, ["status"], id="unknown-field"),
        pytest.param({"message": "hi"}, ["message", "body"], id="wrong-name"),
    ],
)
def test_invalid_reply_is_422_and_stores_nothing(client, db, body, fields):
    alice = customer()
    created = create(client, alice)
    before = snapshot(db, created["id"])

    response = client.post(f"{MOBILE}/{created['id']}/messages", json=body, headers=alice)

    problem = assert_problem(response, 422, "validation_failed")
    assert sorted(error_fields(problem)) == sorted(fields)
    assert all(entry["message"] for entry in problem["errors"])
    assert snapshot(db, created["id"]) == before


def test_reply_of_5000_characters_with_surrounding_spaces_is_stored_trimmed(client, db):
    alice = customer()
    created = create(client, alice)

    response = post_reply(client, alice, created["id"], "\n " + "é" * 5000 + "  ")

    assert response.status_code == 201, response.text
    assert response.json()["data"]["messages"][-1]["body"] == "é" * 5000
    assert stored_rows(db, "messages", created["id"])[-1]["body"] == "é" * 5000


@pytest.mark.parametrize(
    "content",
    [b'{"body": "unterminated', b'{"body": "\xc3\x28"}', b'{"body": "\\udfff"}', b"null x"],
    ids=["truncated", "invalid-utf8", "lone-surrogate", "garbage"],
)
def test_malformed_reply_body_is_400_and_stores_nothing(client, db, content):
    alice = customer()
    created = create(client, alice)
    before = snapshot(db, created["id"])

    response = client.post(
        f"{MOBILE}/{created['id']}/messages",
        content=content,
        headers={**alice, "Content-Type": "application/json"},
    )

    assert_problem(response, 400, "malformed_body")
    assert snapshot(db, created["id"]) == before


def test_unicode_reply_round_trips(client, db):
    alice = customer(name="דנה 🌸")
    created = create(client, alice)
    # Right-to-left scripts on purpose.
    text = "مرحبا، التطبيق لا يعمل 😢\nשלום 👋🏽 — ok"  # noqa: RUF001

    data = post_reply(client, alice, created["id"], text).json()["data"]

    assert data["messages"][-1]["body"] == text
    assert data["messages"][-1]["authorName"] == "דנה 🌸"
    fetched = client.get(f"{MOBILE}/{created['id']}", headers=alice).json()["data"]
    assert fetched["messages"][-1]["body"] == text
    assert stored_rows(db, "messages", created["id"])[-1]["body"] == text


# -- concurrency --------------------------------------------------------------------------


def _assert_all_replies_stored(
    db: sa.Engine, request_id: int, responses: list[Any], bodies: list[str]
) -> None:
    assert [r.status_code for r in responses] == [201] * len(bodies), [
        r.text for r in responses if r.status_code != 201
    ]
    reply_ids = []
    thread_lengths = []
    for response, body in zip(responses, bodies, strict=True):
        thread = response.json()["data"]["messages"]
        thread_lengths.append(len(thread))
        reply_ids += [m["id"] for m in thread if m["body"] == body]
    assert len(set(reply_ids)) == len(bodies)
    # Each reply saw the thread as committed before it: every length from 2 to n+1 once.
    assert sorted(thread_lengths) == list(range(2, len(bodies) + 2))
    stored = stored_rows(db, "messages", request_id)
    assert len(stored) == len(bodies) + 1
    assert {m["id"] for m in stored[1:]} == set(reply_ids)
    assert sorted(m["body"] for m in stored[1:]) == sorted(bodies)
    row = stored_request(db, request_id)
    assert row["version"] == len(bodies) + 1
    assert row["last_customer_message_at"] == max(m["created_at"] for m in stored)
    events = stored_rows(db, "request_events", request_id)
    assert [e["type"] for e in events].count("customer_replied") == len(bodies)


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """Run the ASGI app's startup and shutdown around the block."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


@pytest.mark.slow
def test_concurrent_replies_in_one_process_are_all_stored(client, db, settings):
    alice = customer()
    created = create(client, alice)
    bodies = [f"concurrent reply {i}" for i in range(CONCURRENT_REPLIES)]
    in_flight = 0
    most_in_flight = 0

    all_issued = asyncio.Event()

    async def send(http: httpx.AsyncClient, body: str) -> httpx.Response:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        if in_flight == CONCURRENT_REPLIES:
            all_issued.set()
        # Every reply is handed to the app before any is answered. (On SQLite the
        # service runs each statement inline and serialises writers with one lock.)
        await all_issued.wait()
        try:
            return await http.post(
                f"{MOBILE}/{created['id']}/messages", json={"body": body}, headers=alice
            )
        finally:
            in_flight -= 1

    async def run() -> list[httpx.Response]:
        app = create_app(settings)
        async with _lifespan(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                return list(await asyncio.gather(*(send(http, body) for body in bodies)))

    responses = asyncio.run(run())

    assert most_in_flight == CONCURRENT_REPLIES
    _assert_all_replies_stored(db, created["id"], responses, bodies)


@pytest.mark.slow
def test_concurrent_replies_through_two_server_processes_are_all_stored(db, database_url, tmp_path):
    alice = customer()
    bodies = [f"parallel reply {i}" for i in range(CONCURRENT_REPLIES)]
    migrated_database(database_url)
    with running_servers(database_url, tmp_path / "servers", workers=2) as [server]:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=60) as http:
            created = create(http, alice)
        start = threading.Barrier(CONCURRENT_REPLIES)

        def send(body: str) -> httpx.Response:
            with httpx.Client(base_url=server.url, trust_env=False, timeout=60) as http:
                start.wait()
                return http.post(
                    f"{MOBILE}/{created['id']}/messages", json={"body": body}, headers=alice
                )

        with ThreadPoolExecutor(CONCURRENT_REPLIES) as pool:
            responses = list(pool.map(send, bodies))

    _assert_all_replies_stored(db, created["id"], responses, bodies)
