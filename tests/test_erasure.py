"""Erasing a customer's data: ``POST /api/admin/customers/{sub}/erase`` (issue 15, point 5).

decisions.md "Exactly once, and erasure": name, picture, message bodies, attachments and
devices erased in one transaction, bodies ``[erased]``, request skeletons and statistics
kept, the history records it. Every rule below reads the rows back on each database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support_requests.domain.webhooks import CREATED
from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.storage.attachments import AttachmentStore
from support_requests.storage.customers import ERASED, CustomerData
from support_requests.storage.database import STATEMENT_OBSERVERS, Database
from support_requests.storage.models import Base
from support_requests.storage.outbox import Event
from support_requests.storage.support_desk import SupportDesk
from support_requests.webhooks.secrets import new_secret
from tests.helpers import (
    ADMIN,
    MOBILE,
    admin,
    admin_id_of,
    admin_principal,
    assert_problem,
    create,
    customer,
    customer_principal,
    known_admin,
    move_to,
    refusing_inserts,
    reply,
    stored_request,
)
from tests.test_attachments import PDF, png, uploaded
from tests.test_device_context import FULL_DEVICE
from tests.test_internal_notes import note
from tests.test_ratings import rate
from tests.webhook_receiver import add_endpoint, enqueue

ERASE = "/api/admin/customers/{}/erase"
DEVICES = "/api/mobile/devices"
STATS = "/api/admin/stats"
# The columns of a request that erasure changes (the versions move too); every other
# column keeps its value.
ERASED_REQUEST_COLUMNS = {
    "customer_name": None,
    "customer_image": None,
    "subject": ERASED,
    "rating_comment": None,
    "device_platform": None,
    "device_os_version": None,
    "device_app_version": None,
    "device_app_build": None,
    "device_model": None,
    "device_locale": None,
    "device_time_zone": None,
}


@dataclass
class Customer:
    """A customer with everything the service can hold of them."""

    sub: str
    headers: dict[str, str]
    requests: list[int]
    uploads: list[str]
    attachments: list[str]


def rows(db: sa.Engine, table_name: str, **where: Any) -> list[dict[str, Any]]:
    """The table's rows matching ``where`` (column = value), in key order."""
    table = Base.metadata.tables[table_name]
    query = table.select().order_by(*table.primary_key.columns)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    with db.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def request_messages(db: sa.Engine, request_ids: list[int]) -> list[dict[str, Any]]:
    return [m for request_id in request_ids for m in rows(db, "messages", request_id=request_id)]


def add_webhook_events(database_url: str, *subs: str) -> None:
    """One ``support_request.created`` event per customer, delivered to one endpoint."""

    async def run() -> None:
        database = Database(database_url)
        try:
            events = [
                Event(CREATED, {"requestId": 1, "customerId": sub}, request_id=1, customer_id=sub)
                for sub in subs
            ]
            await enqueue(database, events)
        finally:
            await database.dispose()

    asyncio.run(run())


def customer_with_everything(
    client: Any, db: sa.Engine, database_url: str, staff: dict[str, str]
) -> Customer:
    """A customer with two requests (one resolved, rated, with staff replies, an internal
    note and attachments; one open), an upload not attached yet, a push device, a stored
    idempotent answer and a webhook event."""
    sub = f"customer-{uuid.uuid4().hex[:12]}"
    headers = customer(name="Alex Example", sub=sub, picture="https://images.example.test/alex.png")
    shot = uploaded(client, headers, png(), "my-card.png")
    first = create(
        client,
        headers,
        subject="Card 4111 declined",
        message="My card 4111 1111 1111 1111 was declined.",
        device=FULL_DEVICE,
        attachments=[shot],
    )["id"]
    staff_file = uploaded(client, staff, PDF, "refund-for-alex.pdf", path="/api/admin/attachments")
    reply(client, staff, first, "Alex, your card 4111 is fine now.", api=ADMIN)
    response = client.post(
        f"{ADMIN}/{first}/messages",
        json={"body": "Refund form", "attachments": [staff_file]},
        headers=staff,
    )
    assert response.status_code == 201, response.text
    assert note(client, staff, first, "Alex called twice, angry.").status_code == 201
    move_to(client, staff, first, "resolved")
    assert rate(client, headers, first, score=2, comment="Alex was not happy").status_code == 200
    second = client.post(
        MOBILE,
        json={"category": "account", "subject": "Delete me", "message": "I am Alex, at home."},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert second.status_code == 201, second.text
    pending = uploaded(client, headers, PDF, "passport-alex.pdf")
    device = client.post(
        DEVICES, json={"platform": "ios", "token": f"apns-{sub}", "appId": "app"}, headers=headers
    )
    assert device.status_code == 201, device.text
    add_webhook_events(database_url, sub)
    return Customer(
        sub, headers, [first, second.json()["data"]["id"]], [pending], [shot, staff_file]
    )


def erase(client: Any, sub: str, headers: dict[str, str] | None = None) -> Any:
    return client.post(ERASE.format(sub), headers=headers or admin())


def erased(client: Any, sub: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = erase(client, sub, headers)
    assert response.status_code == 200, response.text
    assert response.json()["message"] == "Customer erased successfully"
    return dict(response.json()["data"])


@pytest.fixture
def world(client: Any, db: sa.Engine, database_url: str) -> Iterator[tuple[Customer, Customer]]:
    """Two customers with everything: the first is erased, the second must not change."""
    endpoint = add_endpoint(db, "http://127.0.0.1:9/hook", new_secret())
    assert endpoint
    staff = known_admin(client)
    yield (
        customer_with_everything(client, db, database_url, staff),
        customer_with_everything(client, db, database_url, staff),
    )


def everything_of(db: sa.Engine, person: Customer) -> dict[str, Any]:
    """Every stored row about ``person``."""
    return {
        "requests": [stored_request(db, request_id) for request_id in person.requests],
        "messages": request_messages(db, person.requests),
        "events": [e for r in person.requests for e in rows(db, "request_events", request_id=r)],
        "attachments": [
            row
            for row in rows(db, "attachments")
            if row["request_id"] in person.requests or row["owner_id"] == person.sub
        ],
        "chunks": [
            row
            for attachment_id in person.attachments + person.uploads
            for row in rows(db, "attachment_chunks", attachment_id=attachment_id)
        ],
        "devices": rows(db, "devices", customer_id=person.sub),
        "idempotency": rows(db, "idempotency_records", owner=person.sub),
        "webhook_events": rows(db, "webhook_events", customer_id=person.sub),
    }


# -- what is erased, what stays -------------------------------------------------------------


def test_erasure_blanks_every_personal_field_and_nothing_else(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, _ = world
    before = everything_of(db, alex)
    data = erased(client, alex.sub)
    assert data["customerId"] == alex.sub
    # Request 1: the first message, two staff replies, the internal note; request 2: one.
    # Attachments: the customer's, the staff's and the upload not attached yet.
    counts = (data["requests"], data["messages"], data["attachments"], data["devices"])
    assert counts == (2, 5, 3, 1)
    assert len(before["messages"]) == 5
    after = everything_of(db, alex)
    for old, new in zip(before["requests"], after["requests"], strict=True):
        expected = {**old, **ERASED_REQUEST_COLUMNS}
        if old["resolution_note"] is not None:
            expected["resolution_note"] = ERASED
        expected["version"] = old["version"] + 1
        expected["customer_version"] = old["customer_version"] + 1
        assert new == expected
    for old, new in zip(before["messages"], after["messages"], strict=True):
        expected = {**old, "body": ERASED}
        if old["author_type"] == "customer":
            expected.update(author_name=None, author_image=None)
        assert new == expected
    assert any(m["author_type"] == "admin" and m["author_name"] for m in after["messages"])
    assert any(m["internal"] for m in after["messages"])


def test_erasure_keeps_the_statistics(client: Any, world: tuple[Customer, Customer]) -> None:
    staff = admin()
    window = {"from": "2000-01-01T00:00:00.000Z", "to": "2100-01-01T00:00:00.000Z"}
    before = client.get(STATS, params=window, headers=staff)
    erased(client, world[0].sub)
    after = client.get(STATS, params=window, headers=staff)
    assert before.status_code == after.status_code == 200
    assert after.json()["data"] == before.json()["data"]
    assert before.json()["data"]["ratings"]["count"] >= 2


def test_erasure_deletes_attachment_bytes_and_keeps_their_rows_as_removed(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, _ = world
    before = {row["id"]: row for row in everything_of(db, alex)["attachments"]}
    assert len(before) == 3 and everything_of(db, alex)["chunks"]
    data = erased(client, alex.sub)
    assert data["attachments"] == 3
    after = everything_of(db, alex)
    assert after["chunks"] == []
    for row in after["attachments"]:
        old = before[row["id"]]
        assert row["removed_at"] == data_time(data)
        assert row == {
            **old,
            "file_name": ERASED,
            "thumbnail": None,
            "thumbnail_content_type": None,
            "storage_path": None,
            "removed_at": row["removed_at"],
            "removed_by": "erasure",
        }
    staff = admin()
    for attachment_id in alex.attachments:
        got = client.get(f"/api/admin/attachments/{attachment_id}", headers=staff)
        assert_problem(got, 404, "not_found")
    for attachment_id in alex.attachments + alex.uploads:
        mine = client.get(f"/api/mobile/attachments/{attachment_id}", headers=alex.headers)
        assert_problem(mine, 404, "not_found")
    shown = client.get(f"{MOBILE}/{alex.requests[0]}", headers=alex.headers).json()["data"]
    listed = shown["messages"][0]["attachments"]
    assert [(a["fileName"], a["removed"], a["url"]) for a in listed] == [(ERASED, True, None)]


def data_time(data: dict[str, Any]) -> datetime:
    """``erasedAt`` as the naive UTC time the rows store."""
    return datetime.fromisoformat(data["erasedAt"].removesuffix("Z"))


def test_erasure_deletes_the_files_in_the_attachment_directory(
    settings: Settings, db: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    app = create_app(dataclasses.replace(settings, attachment_dir=files))
    with app.test_client() as client:
        alex = customer_with_everything(client, db, database_url, known_admin(client))
        stored = sorted(p.name for p in files.iterdir())
        assert len(stored) == 3
        assert erased(client, alex.sub)["attachments"] == 3
    assert list(files.iterdir()) == []
    assert all(row["storage_path"] is None for row in everything_of(db, alex)["attachments"])


def test_erasure_deletes_devices_idempotency_records_and_webhook_events(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, other = world
    events = {row["id"] for row in rows(db, "webhook_events", customer_id=alex.sub)}
    assert events and rows(db, "devices", customer_id=alex.sub)
    assert rows(db, "idempotency_records", owner=alex.sub)
    deliveries = [row for row in rows(db, "webhook_deliveries") if row["event_id"] in events]
    assert deliveries
    others_before = everything_of(db, other)
    others_deliveries = [r for r in rows(db, "webhook_deliveries") if r["event_id"] not in events]
    assert erased(client, alex.sub)["devices"] == 1
    after = everything_of(db, alex)
    assert (after["devices"], after["idempotency"], after["webhook_events"]) == ([], [], [])
    assert rows(db, "webhook_deliveries") == others_deliveries
    assert everything_of(db, other) == others_before
    assert client.get(DEVICES, headers=alex.headers).json()["data"] == []


def test_erasure_records_one_erased_event_per_request_without_personal_data(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, _ = world
    staff = admin()
    data = erased(client, alex.sub, staff)
    staff_id = admin_id_of(staff)
    for request_id in alex.requests:
        history = client.get(f"{ADMIN}/{request_id}/events", headers=staff)
        assert history.status_code == 200
        last = history.json()["data"][-1]
        assert last["type"] == "erased"
        assert (last["actor"], last["changes"], last["at"]) == (
            {"type": "admin", "id": staff_id},
            {},
            data["erasedAt"],
        )
        stored = rows(db, "request_events", request_id=request_id)
        assert [e["type"] for e in stored].count("erased") == 1


def test_erasure_changes_every_etag(client: Any, world: tuple[Customer, Customer]) -> None:
    alex, _ = world
    staff = admin()
    views = [(f"{MOBILE}/{r}", alex.headers) for r in alex.requests]
    views += [(f"{ADMIN}/{r}", staff) for r in alex.requests] + [(MOBILE, alex.headers)]
    tags = [client.get(url, headers=headers).headers["ETag"] for url, headers in views]
    erased(client, alex.sub)
    for (url, headers), tag in zip(views, tags, strict=True):
        again = client.get(url, headers={**headers, "If-None-Match": tag})
        assert again.status_code == 200, url
        assert again.headers["ETag"] != tag


def test_the_customers_token_still_works_after_erasure(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, _ = world
    erased(client, alex.sub)
    listed = client.get(MOBILE, headers=alex.headers)
    assert listed.status_code == 200
    assert sorted(r["id"] for r in listed.json()["data"]) == sorted(alex.requests)
    shown = client.get(f"{MOBILE}/{alex.requests[1]}", headers=alex.headers).json()["data"]
    assert shown["subject"] == ERASED
    assert {m["body"] for m in shown["messages"]} == {ERASED}
    detail = reply(client, alex.headers, alex.requests[1], "Actually, one more thing.")
    assert detail["messages"][-1]["body"] == "Actually, one more thing."
    stored = request_messages(db, [alex.requests[1]])
    assert [m["body"] for m in stored] == [ERASED, "Actually, one more thing."]
    assert stored[-1]["author_name"] == "Alex Example"


def test_other_customers_are_untouched(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, other = world
    before = everything_of(db, other)
    erased(client, alex.sub)
    assert everything_of(db, other) == before
    shown = client.get(f"{MOBILE}/{other.requests[0]}", headers=other.headers).json()["data"]
    assert shown["subject"] == "Card 4111 declined"


def test_erasing_an_unknown_customer_is_404_and_changes_nothing(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    before = [everything_of(db, person) for person in world]
    response = erase(client, "nobody-we-know")
    body = assert_problem(response, 404, "not_found")
    assert body["detail"] == "Customer nobody-we-know was not found."
    assert [everything_of(db, person) for person in world] == before


def test_erasure_is_for_admins_only(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, _ = world
    before = everything_of(db, alex)
    assert_problem(erase(client, alex.sub, alex.headers), 403, "forbidden")
    assert_problem(client.post(ERASE.format(alex.sub)), 401, "unauthenticated")
    assert everything_of(db, alex) == before


def test_a_blank_sub_is_400(client: Any) -> None:
    assert_problem(erase(client, "%20"), 400, "invalid_path_param")


def test_erasing_twice_answers_200_with_zero_counts_and_changes_nothing(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, _ = world
    erased(client, alex.sub)
    before = everything_of(db, alex)
    again = erased(client, alex.sub)
    assert (again["requests"], again["messages"], again["attachments"], again["devices"]) == (
        0,
        0,
        0,
        0,
    )
    assert everything_of(db, alex) == before


def test_a_customer_with_only_a_device_is_erased(client: Any, db: sa.Engine) -> None:
    sub = f"customer-{uuid.uuid4().hex[:12]}"
    headers = customer(sub=sub)
    response = client.post(DEVICES, json={"platform": "android", "token": "fcm-1"}, headers=headers)
    assert response.status_code == 201
    data = erased(client, sub)
    assert (data["requests"], data["messages"], data["devices"]) == (0, 0, 1)
    assert rows(db, "devices", customer_id=sub) == []


def test_an_erasure_that_fails_midway_leaves_everything_as_it_was(
    client: Any, db: sa.Engine, world: tuple[Customer, Customer]
) -> None:
    alex, _ = world
    before = everything_of(db, alex)
    with refusing_inserts(db, "request_events"):  # the last of its writes but two
        response = erase(client, alex.sub)
    assert_problem(response, 500, "internal_error")
    assert everything_of(db, alex) == before


# -- a reply at the same moment -----------------------------------------------------------


def test_erasure_locks_the_customers_requests_before_it_writes(
    client: Any, database_url: str, world: tuple[Customer, Customer]
) -> None:
    """PostgreSQL: ``SELECT … FOR UPDATE`` of the customer's requests opens the transaction
    (replies lock the same rows); SQLite: the transaction begins as the one writer."""
    statements: list[str] = []

    def observe(sql: str, _parameters: Any) -> None:
        statements.append(" ".join(sql.split()))

    STATEMENT_OBSERVERS.append(observe)
    try:
        erased(client, world[0].sub)
    finally:
        STATEMENT_OBSERVERS.remove(observe)
    begin = next(i for i, sql in enumerate(statements) if sql.startswith("BEGIN"))
    first = statements[begin + 1]
    if database_url.startswith("postgresql"):
        assert statements[begin] == "BEGIN"
        assert first.startswith("SELECT") and "FROM support_requests" in first, first
        assert first.endswith("FOR UPDATE"), first
    else:
        assert statements[begin] == "BEGIN IMMEDIATE"
    assert not any(sql.startswith(("UPDATE", "DELETE")) for sql in statements[:begin])


def test_a_reply_racing_an_erasure_lands_wholly_before_or_after_it(database_url: str) -> None:
    """The reply is either erased with the rest (and counted) or stored after, intact."""

    async def run() -> list[tuple[str, int]]:
        database = Database(database_url, pool_size=4)
        outcomes = []
        try:
            await database.create_schema()
            desk = SupportDesk(database)
            customers = CustomerData(database, AttachmentStore(database))
            staff = admin_principal()
            for _ in range(12):
                person = customer_principal()
                record = await desk.create_request(
                    person, category="other", subject="Hi", message="First."
                )
                request_id = record.row.id
                _, erasure = await asyncio.gather(
                    desk.reply_as_customer(person, request_id, "Raced."),
                    customers.erase(staff, person.sub),
                )
                async with database.reading() as connection:
                    bodies = [
                        row.body
                        for row in await connection.execute(
                            sa.select(Base.metadata.tables["messages"].c.body)
                            .where(Base.metadata.tables["messages"].c.request_id == request_id)
                            .order_by(Base.metadata.tables["messages"].c.id)
                        )
                    ]
                assert bodies[0] == ERASED and len(bodies) == 2
                outcomes.append((bodies[1], erasure.messages))
        finally:
            await database.dispose()
        return outcomes

    for body, counted in asyncio.run(run()):
        assert (body, counted) in ((ERASED, 2), ("Raced.", 1))
