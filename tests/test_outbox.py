"""The outbox, rule by rule (decisions.md "Round 2 / Push and webhooks", issue 14): every
change that yields events writes them in its own transaction, with one delivery per
endpoint that takes their type; a change that rolls back or is refused yields none.

Endpoints and devices are rows written straight into their tables (their APIs are other
modules'); every test reads ``webhook_events`` and ``webhook_deliveries`` as stored, with
each event's body as a receiver gets it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from support_requests.domain.webhooks import (
    ASSIGNED,
    ATTACHMENT_REMOVED,
    CREATED,
    EVENT_TYPES,
    MESSAGE_CREATED,
    PUSH,
    RATED,
    STATUS_CHANGED,
)
from support_requests.storage import outbox, support_desk
from support_requests.storage.database import STATEMENT_OBSERVERS, Database
from support_requests.storage.models import Base
from support_requests.storage.support_desk import SupportDesk
from tests.helpers import (
    ADMIN,
    MOBILE,
    add_endpoint_row,
    admin,
    admin_id_of,
    admin_principal,
    assert_problem,
    create,
    customer,
    customer_principal,
    known_admin,
    move_to,
    on_database,
    post_reply,
    reply,
    stored_request,
    stored_rows,
    with_desk,
)
from tests.webhook_receiver import request_event

EVENTS = Base.metadata.tables["webhook_events"]
DELIVERIES = Base.metadata.tables["webhook_deliveries"]
DEVICES = Base.metadata.tables["devices"]
UPLOAD = "/api/mobile/attachments"
ADMIN_UPLOAD = "/api/admin/attachments"


def stored_events(db: Any) -> list[dict[str, Any]]:
    """Every stored event, oldest first, its body parsed, with the endpoints it goes to."""
    with db.connect() as connection:
        events = connection.execute(EVENTS.select().order_by(EVENTS.c.id)).all()
        deliveries = connection.execute(DELIVERIES.select().order_by(DELIVERIES.c.id)).all()
    shown = []
    for event in events:
        body = orjson.loads(event.body)
        assert set(body) == {"type", "timestamp", "data"}
        assert body["type"] == event.type
        assert body["data"]["requestId"] == event.request_id
        assert body["data"]["customerId"] == event.customer_id
        shown.append(
            {
                "type": event.type,
                "public_id": event.public_id,
                "timestamp": body["timestamp"],
                "data": body["data"],
                "endpoints": [d.endpoint_id for d in deliveries if d.event_id == event.id],
            }
        )
    return shown


def types(db: Any) -> list[str]:
    return [event["type"] for event in stored_events(db)]


def delivery_rows(db: Any) -> list[dict[str, Any]]:
    with db.connect() as connection:
        rows = connection.execute(DELIVERIES.select().order_by(DELIVERIES.c.id))
        return [dict(row._mapping) for row in rows]


def outbox_counts(db: Any) -> tuple[int, int]:
    """How many events and deliveries are stored."""
    with db.connect() as connection:
        count = sa.func.count()
        return (
            connection.scalar(sa.select(count).select_from(EVENTS)) or 0,
            connection.scalar(sa.select(count).select_from(DELIVERIES)) or 0,
        )


def add_device(db: Any, customer_id: str, platform: str = "ios", app_id: str | None = None) -> str:
    """A push token of ``customer_id``, as the devices API stores one: its id."""
    device_id = "dev_" + uuid.uuid4().hex[:20]
    token = f"{platform}-token-{uuid.uuid4().hex}"
    now = datetime.now(UTC).replace(tzinfo=None)
    with db.begin() as connection:
        connection.execute(
            DEVICES.insert(),
            {
                "id": device_id,
                "customer_id": customer_id,
                "platform": platform,
                "token": token,
                "token_sha256": uuid.uuid4().hex * 2,
                "app_id": app_id,
                "created_at": now,
                "registered_at": now,
            },
        )
    return device_id


def device_rows(db: Any, customer_id: str) -> list[dict[str, Any]]:
    with db.connect() as connection:
        rows = connection.execute(
            DEVICES.select()
            .where(DEVICES.c.customer_id == customer_id)
            .order_by(DEVICES.c.registered_at, DEVICES.c.id)
        )
        return [dict(row._mapping) for row in rows]


def customer_id_of(client: Any, staff: dict[str, str], request_id: int) -> str:
    response = client.get(f"{ADMIN}/{request_id}", headers=staff)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["customer"]["id"])


def admin_view(client: Any, staff: dict[str, str], request_id: int) -> dict[str, Any]:
    response = client.get(f"{ADMIN}/{request_id}", headers=staff)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def upload_text(client: Any, headers: dict[str, str], *, path: str = UPLOAD) -> str:
    response = client.post(
        path, files={"file": ("notes.txt", b"steps to reproduce", "text/plain")}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def staff_reply(client: Any, staff: dict[str, str], request_id: int, body: str) -> dict[str, Any]:
    return reply(client, staff, request_id, body, api=ADMIN)


# -- each change's events -------------------------------------------------------------------


def test_created_carries_the_admin_view_with_the_first_message(client, db):
    endpoint = add_endpoint_row(db)
    owner, staff = customer(name="Dana"), admin()

    created = create(client, owner, subject="Cannot log in", message="It says no.")

    [event] = stored_events(db)
    view = admin_view(client, staff, created["id"])
    assert event["type"] == CREATED
    assert event["data"] == {
        "requestId": created["id"],
        "customerId": view["customer"]["id"],
        "request": view,
    }
    assert [m["body"] for m in event["data"]["request"]["messages"]] == ["It says no."]
    assert event["timestamp"] == created["createdAt"]
    assert event["public_id"].startswith("evt_")
    [delivery] = delivery_rows(db)
    assert (delivery["endpoint_id"], delivery["status"], delivery["attempts"]) == (
        endpoint,
        outbox.PENDING,
        0,
    )
    assert delivery["order_key"] == str(created["id"])


def test_created_with_an_attachment_shows_it_in_the_admin_view(client, db):
    add_endpoint_row(db)
    owner, staff = customer(), admin()
    upload = upload_text(client, owner)

    created = create(client, owner, attachments=[upload])

    [event] = stored_events(db)
    view = admin_view(client, staff, created["id"])
    assert event["data"]["request"] == view
    [attachment] = event["data"]["request"]["messages"][0]["attachments"]
    assert (attachment["id"], attachment["url"]) == (upload, f"{ADMIN_UPLOAD}/{upload}")


def test_message_created_is_emitted_for_each_public_reply(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    move_to(client, staff, request_id, "in_progress")
    add_endpoint_row(db)
    upload = upload_text(client, owner)

    response = client.post(
        f"{MOBILE}/{request_id}/messages",
        json={"body": "Here are the logs.", "attachments": [upload]},
        headers=owner,
    )
    assert response.status_code == 201, response.text
    staff_reply(client, staff, request_id, "Thanks, looking.")

    events = stored_events(db)
    assert [e["type"] for e in events] == [MESSAGE_CREATED, MESSAGE_CREATED]
    view = admin_view(client, staff, request_id)
    stored = stored_rows(db, "messages", request_id)
    for event, message in zip(events, view["messages"][1:], strict=True):
        assert event["data"] == {
            "requestId": request_id,
            "customerId": view["customer"]["id"],
            "message": {
                "id": message["id"],
                "authorType": message["authorType"],
                "body": message["body"],
                "createdAt": message["createdAt"],
                "attachments": message["attachments"],
            },
        }
        assert event["timestamp"] == message["createdAt"]
    assert [e["data"]["message"]["authorType"] for e in events] == ["customer", "admin"]
    assert [e["data"]["message"]["id"] for e in events] == [m["id"] for m in stored[1:]]
    assert events[0]["data"]["message"]["attachments"][0]["id"] == upload


def test_an_internal_note_yields_no_event(client, db):
    owner, staff = customer(), admin()
    request_id = create(client, owner)["id"]
    add_endpoint_row(db)

    response = client.post(
        f"{ADMIN}/{request_id}/messages",
        json={"body": "Customer is on a jailbroken phone.", "internal": True},
        headers=staff,
    )

    assert response.status_code == 201, response.text
    assert stored_rows(db, "messages", request_id)[-1]["internal"] is True
    assert outbox_counts(db) == (0, 0)


def test_a_first_staff_reply_on_an_open_request_yields_message_status_and_assignment_in_order(
    client, db
):
    owner, staff = customer(), admin()
    request_id = create(client, owner)["id"]
    add_endpoint_row(db)

    detail = staff_reply(client, staff, request_id, "On it.")

    events = stored_events(db)
    assert [e["type"] for e in events] == [MESSAGE_CREATED, STATUS_CHANGED, ASSIGNED]
    customer_id = stored_request(db, request_id)["customer_id"]
    assert events[1]["data"] == {
        "requestId": request_id,
        "customerId": customer_id,
        "from": "open",
        "to": "in_progress",
    }
    assert events[2]["data"] == {
        "requestId": request_id,
        "customerId": customer_id,
        "from": None,
        "to": admin_id_of(staff),
    }
    assert detail["status"] == "in_progress"
    assert len({e["timestamp"] for e in events}) == 1
    # Deliveries of one request to one endpoint go in the order of the changes.
    assert [d["event_id"] for d in delivery_rows(db)] == sorted(
        d["event_id"] for d in delivery_rows(db)
    )


def test_a_customer_reply_reopening_a_resolved_request_yields_message_then_status(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    move_to(client, staff, request_id, "resolved")
    add_endpoint_row(db)

    reply(client, owner, request_id, "Still broken.")

    events = stored_events(db)
    assert [e["type"] for e in events] == [MESSAGE_CREATED, STATUS_CHANGED]
    assert (events[1]["data"]["from"], events[1]["data"]["to"]) == ("resolved", "open")


def test_an_edit_yields_status_changed_then_assigned_and_tags_or_a_note_yield_none(client, db):
    owner, staff, other = customer(), known_admin(client), known_admin(client)
    request_id = create(client, owner)["id"]
    add_endpoint_row(db)

    both = client.patch(
        f"{ADMIN}/{request_id}",
        json={
            "assignedAdminId": admin_id_of(other),
            "status": "resolved",
            "resolutionNote": "Fixed in 4.2.",
        },
        headers=staff,
    )
    assert both.status_code == 200, both.text
    tagged = client.patch(f"{ADMIN}/{request_id}", json={"tags": ["ios"]}, headers=staff)
    assert tagged.status_code == 200, tagged.text
    noted = client.patch(
        f"{ADMIN}/{request_id}", json={"resolutionNote": "Fixed in 4.2.1."}, headers=staff
    )
    assert noted.status_code == 200, noted.text

    events = stored_events(db)
    assert [e["type"] for e in events] == [STATUS_CHANGED, ASSIGNED]
    assert (events[0]["data"]["from"], events[0]["data"]["to"]) == ("open", "resolved")
    assert (events[1]["data"]["from"], events[1]["data"]["to"]) == (None, admin_id_of(other))
    stored = stored_request(db, request_id)
    assert (stored["tags"], stored["resolution_note"]) == (["ios"], "Fixed in 4.2.1.")


def test_a_rating_yields_rated_with_the_score(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    move_to(client, staff, request_id, "resolved")
    add_endpoint_row(db)

    response = client.put(
        f"{MOBILE}/{request_id}/rating", json={"score": 4, "comment": "Quick."}, headers=owner
    )

    assert response.status_code == 200, response.text
    [event] = stored_events(db)
    assert event["type"] == RATED
    assert event["data"] == {
        "requestId": request_id,
        "customerId": stored_request(db, request_id)["customer_id"],
        "score": 4,
    }
    assert event["timestamp"] == response.json()["data"]["rating"]["ratedAt"]


def test_removing_an_attachment_yields_attachment_removed(client, db):
    owner, staff = customer(), admin()
    upload = upload_text(client, owner)
    request_id = create(client, owner, attachments=[upload])["id"]
    add_endpoint_row(db)

    removed = client.delete(f"{ADMIN_UPLOAD}/{upload}", headers=staff)
    again = client.delete(f"{ADMIN_UPLOAD}/{upload}", headers=staff)

    assert (removed.status_code, again.status_code) == (200, 200), removed.text
    assert removed.json()["data"]["removed"] is True
    [event] = stored_events(db)
    [message] = stored_rows(db, "messages", request_id)
    assert event["type"] == ATTACHMENT_REMOVED
    assert event["data"] == {
        "requestId": request_id,
        "customerId": stored_request(db, request_id)["customer_id"],
        "messageId": message["id"],
        "attachmentId": upload,
        "removedBy": admin_id_of(staff),
    }
    history = stored_rows(db, "request_events", request_id)
    assert history[-1]["type"] == "attachment_removed"


def test_removing_an_unattached_upload_or_a_file_on_an_internal_note_yields_no_event(client, db):
    owner, staff = customer(), admin()
    request_id = create(client, owner)["id"]
    loose = upload_text(client, staff, path=ADMIN_UPLOAD)
    noted = upload_text(client, staff, path=ADMIN_UPLOAD)
    note = client.post(
        f"{ADMIN}/{request_id}/messages",
        json={"body": "Server log.", "internal": True, "attachments": [noted]},
        headers=staff,
    )
    assert note.status_code == 201, note.text
    add_endpoint_row(db)

    for upload in (loose, noted):
        response = client.delete(f"{ADMIN_UPLOAD}/{upload}", headers=staff)
        assert response.status_code == 200, response.text
        assert response.json()["data"]["removed"] is True

    assert outbox_counts(db) == (0, 0)
    assert stored_rows(db, "request_events", request_id)[-1]["type"] == "attachment_removed"


# -- notification.push ------------------------------------------------------------------------


def test_a_staff_reply_pushes_to_the_customers_devices_with_their_unread_total(client, db):
    owner, staff = customer(), admin()
    first = create(client, owner)["id"]
    second = create(client, owner, subject="Sync stops")["id"]
    customer_id = stored_request(db, first)["customer_id"]
    staff_reply(client, staff, first, "Known issue.")
    phone = add_device(db, customer_id, "ios", app_id="com.example.app")
    tablet = add_device(db, customer_id, "android")
    add_endpoint_row(db)
    long_body = "Please update to 4.2.1, which fixes syncing. " * 5

    staff_reply(client, staff, second, long_body)

    events = stored_events(db)
    assert [e["type"] for e in events] == [MESSAGE_CREATED, STATUS_CHANGED, ASSIGNED, PUSH]
    badge = client.get("/api/mobile/unread", headers=owner).json()["data"]["unreadCount"]
    assert badge == 2
    assert events[-1]["data"] == {
        "requestId": second,
        "customerId": customer_id,
        "devices": [
            {"id": d["id"], "platform": d["platform"], "token": d["token"], "appId": d["app_id"]}
            for d in device_rows(db, customer_id)
        ],
        "notification": {
            "title": "New reply to “Sync stops”",
            "body": long_body[:120],
            "requestId": second,
            "badge": badge,
        },
    }
    assert [d["id"] for d in events[-1]["data"]["devices"]] == [phone, tablet]
    assert len(events[-1]["data"]["notification"]["body"]) == 120


def test_no_push_without_devices_nor_for_a_customer_reply(client, db):
    owner, staff = customer(), admin()
    request_id = create(client, owner)["id"]
    add_endpoint_row(db)

    staff_reply(client, staff, request_id, "Which version?")
    add_device(db, stored_request(db, request_id)["customer_id"])
    reply(client, owner, request_id, "4.2.0")

    assert PUSH not in types(db)
    assert types(db) == [MESSAGE_CREATED, STATUS_CHANGED, ASSIGNED, MESSAGE_CREATED]


def test_push_tokens_appear_in_no_other_event(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    customer_id = stored_request(db, request_id)["customer_id"]
    add_device(db, customer_id)
    add_device(db, customer_id, "android")
    [token_a, token_b] = [d["token"] for d in device_rows(db, customer_id)]
    add_endpoint_row(db)

    staff_reply(client, staff, request_id, "Try again?")
    reply(client, owner, request_id, "Works.")
    move_to(client, staff, request_id, "resolved")
    client.put(f"{MOBILE}/{request_id}/rating", json={"score": 5}, headers=owner)
    create(client, owner)

    events = stored_events(db)
    assert {e["type"] for e in events} == set(EVENT_TYPES) - {ATTACHMENT_REMOVED}
    with db.connect() as connection:
        bodies = connection.execute(sa.select(EVENTS.c.type, EVENTS.c.body)).all()
    for event_type, body in bodies:
        assert (token_a in body or token_b in body) == (event_type == PUSH), event_type


# -- what does not yield events -------------------------------------------------------------


def test_a_refused_change_yields_no_event(client, db):
    owner, staff = customer(), known_admin(client)
    open_id = create(client, owner)["id"]
    closed_id = create(client, owner)["id"]
    move_to(client, staff, closed_id, "closed")
    add_endpoint_row(db)

    assert_problem(post_reply(client, owner, closed_id, "Hello?"), 400, "request_closed")
    assert_problem(
        client.patch(f"{ADMIN}/{closed_id}", json={"status": "open"}, headers=staff),
        409,
        "invalid_transition",
    )
    assert_problem(
        client.put(f"{MOBILE}/{open_id}/rating", json={"score": 3}, headers=owner),
        409,
        "rating_not_allowed",
    )
    assert_problem(
        client.patch(
            f"{ADMIN}/{open_id}",
            json={"status": "in_progress", "assignedAdminId": str(uuid.uuid4())},
            headers=staff,
        ),
        422,
        "validation_failed",
    )

    assert outbox_counts(db) == (0, 0)
    assert stored_request(db, open_id)["status"] == "open"


class Refusal(Exception):
    """Raised by the test after the change's events were enqueued."""


def test_a_change_that_fails_after_its_enqueue_stores_no_event(database_url, db, monkeypatch):
    alice, agent = customer_principal(), admin_principal()
    add_endpoint_row(db)
    enqueued: list[int] = []

    async def enqueue_then_fail(*args: Any, **kwargs: Any) -> int:
        enqueued.append(await outbox.enqueue(*args, **kwargs))
        raise Refusal

    async def work(desk: SupportDesk) -> int:
        first = await desk.create_request(alice, category="other", subject="s", message="m")
        monkeypatch.setattr(support_desk, "enqueue", enqueue_then_fail)
        with pytest.raises(Refusal):
            await desk.create_request(alice, category="other", subject="t", message="n")
        with pytest.raises(Refusal):
            await desk.reply_as_admin(agent, first.row.id, "Rolled back.")
        return int(first.row.id)

    request_id = with_desk(database_url, work)

    # Each failed after writing its deliveries: the created one, then the reply's three.
    assert enqueued == [1, 3]
    assert types(db) == [CREATED]
    assert len(delivery_rows(db)) == 1
    assert [m["body"] for m in stored_rows(db, "messages", request_id)] == ["m"]
    assert stored_request(db, request_id)["status"] == "open"
    with db.connect() as connection:
        subjects = connection.scalars(sa.select(Base.metadata.tables["support_requests"].c.subject))
        assert list(subjects) == ["s"]


def test_without_an_endpoint_no_event_is_stored(client, db):
    owner, staff = customer(), known_admin(client)
    request_id = create(client, owner)["id"]
    add_device(db, stored_request(db, request_id)["customer_id"])

    staff_reply(client, staff, request_id, "Fixed?")
    reply(client, owner, request_id, "Yes.")
    move_to(client, staff, request_id, "resolved")
    rated = client.put(f"{MOBILE}/{request_id}/rating", json={"score": 5}, headers=owner)

    assert rated.status_code == 200, rated.text
    assert outbox_counts(db) == (0, 0)


def test_an_endpoint_subscribed_to_one_type_gets_only_that_type(client, db):
    owner, staff = customer(), admin()
    request_id = create(client, owner)["id"]
    statuses = add_endpoint_row(db, [STATUS_CHANGED])

    staff_reply(client, staff, request_id, "Looking.")
    alone = stored_events(db)
    everything = add_endpoint_row(db)
    move_to(client, staff, request_id, "resolved")

    # Alone, it gets its type and nothing else is stored.
    assert [(e["type"], e["endpoints"]) for e in alone] == [(STATUS_CHANGED, [statuses])]
    events = stored_events(db)[1:]
    assert [(e["type"], e["endpoints"]) for e in events] == [
        (STATUS_CHANGED, [statuses, everything])
    ]
    create(client, owner)
    assert [(e["type"], e["endpoints"]) for e in stored_events(db)[2:]] == [(CREATED, [everything])]


def test_a_disabled_endpoint_gets_nothing(client, db):
    owner, staff = customer(), admin()
    add_endpoint_row(db, enabled=False)

    request_id = create(client, owner)["id"]
    staff_reply(client, staff, request_id, "On it.")
    move_to(client, staff, request_id, "resolved")

    assert outbox_counts(db) == (0, 0)
    assert stored_request(db, request_id)["status"] == "resolved"


def test_events_are_dated_by_the_desks_clock(database_url, db):
    alice = customer_principal()
    add_endpoint_row(db, [CREATED])
    moment = datetime(2026, 1, 2, 3, 4, 5, 678000)

    async def work(desk: SupportDesk) -> Any:
        return await SupportDesk(desk.database, clock=lambda: moment).create_request(
            alice, category="other", subject="s", message="m"
        )

    with_desk(database_url, work)

    [event] = stored_events(db)
    assert event["timestamp"] == "2026-01-02T03:04:05.678Z"
    [delivery] = delivery_rows(db)
    assert delivery["next_attempt_at"] == moment
    assert delivery["created_at"] == moment


def _create_statements(database_url: str) -> list[str]:
    """Every statement (transaction control included) of one create through the desk."""
    seen: list[str] = []

    def observe(sql: str, parameters: Any) -> None:
        seen.append(" ".join(sql.split()).upper())

    async def work(desk: SupportDesk) -> None:
        alice = customer_principal()
        STATEMENT_OBSERVERS.append(observe)
        try:
            await desk.create_request(alice, category="other", subject="s", message="m")
        finally:
            STATEMENT_OBSERVERS.remove(observe)

    with_desk(database_url, work)
    return seen


def test_a_create_no_endpoint_takes_stays_one_statement_on_postgresql(database_url, db):
    """PostgreSQL: the endpoints are read, then the one-statement create runs on its own
    (no BEGIN) unless an endpoint takes ``created``; then it is a transaction with the
    enqueue. SQLite: always one transaction that reads the endpoints inside."""
    add_endpoint_row(db, [STATUS_CHANGED])
    unsubscribed = _create_statements(database_url)
    add_endpoint_row(db, [CREATED])
    subscribed = _create_statements(database_url)

    reads_endpoints = [s for s in unsubscribed if "FROM WEBHOOK_ENDPOINTS" in s]
    assert len(reads_endpoints) == 1
    if db.dialect.name == "postgresql":
        assert len(unsubscribed) == 2
        assert unsubscribed[0] == reads_endpoints[0]
        assert unsubscribed[1].startswith("WITH CREATED AS (INSERT INTO SUPPORT_REQUESTS")
        assert subscribed[0].startswith("SELECT") and "FROM WEBHOOK_ENDPOINTS" in subscribed[0]
        assert subscribed[1] == "BEGIN"
    else:
        assert unsubscribed[0] == subscribed[0] == "BEGIN IMMEDIATE"
    assert subscribed[-1] == "COMMIT"
    writes = [s for s in subscribed if "INSERT INTO WEBHOOK_" in s]
    if db.dialect.name == "postgresql":
        # The event and its deliveries in one statement (a data-modifying CTE).
        [write] = writes
        assert write.startswith("WITH STORED AS (INSERT INTO WEBHOOK_EVENTS")
        assert "INSERT INTO WEBHOOK_DELIVERIES" in write
    else:
        assert [s.split(" (")[0] for s in writes] == [
            "INSERT INTO WEBHOOK_EVENTS",
            "INSERT INTO WEBHOOK_DELIVERIES",
        ]
    assert types(db) == [CREATED]


def test_a_change_reads_the_endpoints_only_when_one_is_enabled(database_url, db):
    """The lock that starts a change says whether any endpoint is enabled: without one, a
    reply, an edit or a rating runs no statement of its own for webhooks."""
    alice, agent = customer_principal(), admin_principal()
    endpoint = add_endpoint_row(db, enabled=False)
    seen: list[str] = []

    def observe(sql: str, parameters: Any) -> None:
        seen.append(" ".join(sql.split()).upper())

    async def changes(desk: SupportDesk) -> None:
        request_id = (
            await desk.create_request(alice, category="other", subject="s", message="m")
        ).row.id
        await desk.reply_as_admin(agent, request_id, "Looking.")
        await desk.reply_as_customer(alice, request_id, "Thanks.")
        await desk.update(agent, request_id, {"status": "resolved", "resolutionNote": "Done."})
        await desk.rate(alice, request_id, 5, None)

    def outbox_statements() -> list[str]:
        seen.clear()
        STATEMENT_OBSERVERS.append(observe)
        try:
            with_desk(database_url, changes)
        finally:
            STATEMENT_OBSERVERS.remove(observe)
        # The create reads the endpoints on its own (no row is locked before it).
        return [s for s in seen if "WEBHOOK_" in s and "FROM SUPPORT_REQUESTS" not in s][1:]

    assert outbox_statements() == []
    with db.begin() as connection:
        connection.execute(Base.metadata.tables["webhook_endpoints"].update().values(enabled=True))
    enabled = outbox_statements()

    assert (
        len([s for s in enabled if s.startswith("SELECT") and "FROM WEBHOOK_ENDPOINTS" in s]) == 4
    )
    assert types(db)[-1] == RATED
    assert stored_events(db)[-1]["endpoints"] == [endpoint]


def test_an_endpoint_deleted_after_a_change_read_it_gets_no_delivery_and_the_change_stands(
    database_url, db, monkeypatch
):
    """PostgreSQL reads who takes ``created`` before the create's transaction: an endpoint
    deleted in between is left out (no foreign-key failure, no 500), the others still get
    theirs. (SQLite reads them inside its write transaction: nothing can come between.)"""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite reads the endpoints inside the change's write transaction")
    alice = customer_principal()
    gone = add_endpoint_row(db)
    kept = add_endpoint_row(db)
    read = outbox.read_subscribers

    async def read_then_lose_one(connection: Any) -> outbox.Subscribers:
        subscribers = await read(connection)
        with db.begin() as other:
            other.execute(
                sa.delete(outbox.endpoints_table).where(outbox.endpoints_table.c.id == gone)
            )
        return subscribers

    monkeypatch.setattr(support_desk, "read_subscribers", read_then_lose_one)

    created = with_desk(
        database_url,
        lambda desk: desk.create_request(alice, category="other", subject="s", message="m"),
    )

    assert stored_request(db, created.row.id)["subject"] == "s"
    assert types(db) == [CREATED]
    assert [row["endpoint_id"] for row in delivery_rows(db)] == [kept]


def test_changes_yielding_events_for_one_endpoint_do_not_wait_for_each_other(database_url, db):
    """PostgreSQL: a change holds its endpoints with FOR KEY SHARE until it commits (an
    endpoint deleted meanwhile gets no delivery), a lock other changes share: a second
    change's events for the same endpoint are written while the first is still open; an
    update of the endpoint itself (FOR UPDATE) is what waits."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time")
    endpoint = add_endpoint_row(db)
    seen: list[str] = []

    async def scenario(database: Database) -> None:
        at = datetime(2026, 12, 6, tzinfo=UTC).replace(tzinfo=None)
        async with database.writing() as first:
            STATEMENT_OBSERVERS.append(lambda sql, _values: seen.append(sql))
            try:
                await outbox.enqueue(first, [request_event(1)], at, postgresql=True)
            finally:
                STATEMENT_OBSERVERS.pop()
            async with database.writing() as second:
                await second.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
                assert await outbox.enqueue(second, [request_event(2)], at, postgresql=True)
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                async with database.writing() as third:
                    await third.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
                    await third.execute(
                        sa.select(outbox.endpoints_table.c.id).with_for_update(), {}
                    )

    on_database(database_url, scenario)

    assert any("FOR KEY SHARE OF webhook_endpoints" in sql for sql in seen), seen
    assert [(row["endpoint_id"], row["order_key"]) for row in delivery_rows(db)] == [
        (endpoint, "1"),
        (endpoint, "2"),
    ]
