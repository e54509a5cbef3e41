"""Safe retries with Idempotency-Key on create and reply."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from support_requests.handlers.app import create_app
from support_requests.handlers.idempotency import fingerprint
from support_requests.handlers.settings import Settings
from support_requests.storage.database import STATEMENT_OBSERVERS
from support_requests.storage.idempotency import IdempotencyStore
from tests.helpers import ADMIN, MOBILE, admin, create, customer, move_to
from tests.servers import app_in_thread

BODY = {"category": "payment", "subject": "Charged twice", "message": "Two charges on 1 May."}


def _key() -> str:
    return f"key-{uuid.uuid4()}"


def _count(db: sa.Engine, table: str) -> int:
    with db.connect() as connection:
        return int(connection.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)


def test_create_replay_returns_the_first_response_and_writes_nothing(client, db):
    alice, key = customer(), _key()
    first = client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key})
    again = client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _count(db, "support_requests") == 1
    assert _count(db, "messages") == 1


def test_reply_replay_stores_one_message(client, db):
    alice, key = customer(), _key()
    request_id = create(client, alice)["id"]
    url = f"{MOBILE}/{request_id}/messages"
    first = client.post(
        url, json={"body": "More detail"}, headers={**alice, "Idempotency-Key": key}
    )
    again = client.post(
        url, json={"body": "More detail"}, headers={**alice, "Idempotency-Key": key}
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert _count(db, "messages") == 2


def test_admin_reply_replay_stores_one_message(client, db):
    agent, key = admin(), _key()
    request_id = create(client, customer())["id"]
    url = f"{ADMIN}/{request_id}/messages"
    for _ in range(3):
        response = client.post(
            url, json={"body": "On it"}, headers={**agent, "Idempotency-Key": key}
        )
        assert response.status_code == 201
    assert _count(db, "messages") == 2


def test_same_key_with_a_different_body_is_422(client, db):
    alice, key = customer(), _key()
    assert (
        client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key}).status_code == 201
    )
    other = {**BODY, "subject": "Charged three times"}
    response = client.post(MOBILE, json=other, headers={**alice, "Idempotency-Key": key})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "idempotency_key_reused"
    assert _count(db, "support_requests") == 1


def test_same_key_on_another_operation_is_422(client, db):
    alice, key = customer(), _key()
    request_id = create(client, alice)["id"]
    assert (
        client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key}).status_code == 201
    )
    response = client.post(
        f"{MOBILE}/{request_id}/messages",
        json={"body": "x"},
        headers={**alice, "Idempotency-Key": key},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert _count(db, "messages") == 2


def test_a_key_left_in_progress_by_an_older_version_runs_afresh_never_409(client, db):
    """Versions before answers were kept with their change claimed a key first; a row such
    a process left behind when it died is no reason to refuse: the request runs."""
    alice, key = customer(sub=f"c-{uuid.uuid4().hex[:8]}"), _key()
    sub = _sub_of(alice)
    with db.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO idempotency_records (owner, key, fingerprint, state, created_at) "
                "VALUES (:owner, :key, :fingerprint, 'in_progress', :now)"
            ),
            {
                "owner": sub,
                "key": key,
                "fingerprint": fingerprint("POST", MOBILE, BODY),
                "now": _utcnow(),
            },
        )
    response = client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key})
    assert response.status_code == 201, response.text
    assert _count(db, "support_requests") == 1
    replay = client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == response.content


def test_the_answer_is_stored_in_the_transaction_of_its_change(settings, db, monkeypatch):
    """A failure after the answer is written but before the commit leaves neither: the
    retry runs afresh (not a replay of a change that never happened)."""
    alice, key = customer(), _key()
    original_keep = IdempotencyStore.keep

    async def keep_then_fail(self: IdempotencyStore, *args: object, **kwargs: object) -> None:
        await original_keep(self, *args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("the process dies before COMMIT")

    reply = {"body": "Exactly once"}
    headers = {**alice, "Idempotency-Key": key}
    app = create_app(dataclasses.replace(settings, validate_responses=False))
    with app.test_client(raise_server_exceptions=False) as client:
        request_id = create(client, alice)["id"]
        monkeypatch.setattr(IdempotencyStore, "keep", keep_then_fail)
        failed = client.post(f"{MOBILE}/{request_id}/messages", json=reply, headers=headers)
        assert failed.status_code == 500
        assert _count(db, "idempotency_records") == 0
        assert _count(db, "messages") == 1
        monkeypatch.setattr(IdempotencyStore, "keep", original_keep)
        retried = client.post(f"{MOBILE}/{request_id}/messages", json=reply, headers=headers)
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert _count(db, "messages") == 2
    assert _count(db, "idempotency_records") == 1


def test_keys_are_scoped_to_the_caller(client, db):
    key = _key()
    for headers in (customer(), customer()):
        response = client.post(MOBILE, json=BODY, headers={**headers, "Idempotency-Key": key})
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
    assert _count(db, "support_requests") == 2


def test_an_expired_key_runs_again(client, db):
    alice, key = customer(), _key()
    assert (
        client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key}).status_code == 201
    )
    with db.begin() as connection:
        connection.execute(
            sa.text("UPDATE idempotency_records SET created_at = :old"),
            {"old": _utcnow() - timedelta(hours=25)},
        )
    again = client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key})
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert _count(db, "support_requests") == 2


def test_a_failed_request_releases_its_key(client, db):
    alice, key = customer(), _key()
    response = client.post(
        f"{MOBILE}/987654/messages",
        json={"body": "hello"},
        headers={**alice, "Idempotency-Key": key},
    )
    assert response.status_code == 404
    assert _count(db, "idempotency_records") == 0


def test_a_malformed_key_is_422(client, db):
    alice = customer()
    for bad in ("has space", "x" * 256):
        response = client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": bad})
        assert response.status_code == 422, bad
        assert [e["field"] for e in response.json()["errors"]] == ["Idempotency-Key"]
    assert _count(db, "support_requests") == 0


def test_twenty_concurrent_retries_with_one_key_create_one_request(settings: Settings, db):
    app = create_app(dataclasses.replace(settings, validate_responses=False))
    alice, key = customer(), _key()

    async def fire(base: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            responses = await asyncio.gather(
                *(
                    http.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key})
                    for _ in range(20)
                )
            )
        return [r.status_code for r in responses]

    with app_in_thread(app) as base:
        statuses = asyncio.run(fire(base))
        final = httpx.post(base + MOBILE, json=BODY, headers={**alice, "Idempotency-Key": key})
    # Every one answered with the one request: the first to commit, replayed to the rest.
    assert statuses == [201] * 20
    assert final.status_code == 201
    assert _count(db, "support_requests") == 1


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _sub_of(headers: dict[str, str]) -> str:
    import jwt

    token = headers["Authorization"].split()[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def test_expired_keys_are_swept_away(settings: Settings, db):
    alice = customer()
    with create_app(settings).test_client() as client:
        for _ in range(2):
            response = client.post(MOBILE, json=BODY, headers={**alice, "Idempotency-Key": _key()})
            assert response.status_code == 201
    with db.begin() as connection:
        connection.execute(
            sa.text("UPDATE idempotency_records SET created_at = :old"),
            {"old": _utcnow() - timedelta(hours=25)},
        )
    # A process sweeps at most once a minute: a fresh one sweeps on its first claim.
    with create_app(settings).test_client() as client:
        headers = {**alice, "Idempotency-Key": _key()}
        assert client.post(MOBILE, json=BODY, headers=headers).status_code == 201
    assert _count(db, "idempotency_records") == 1


def test_a_retry_of_a_reply_refused_now_still_gets_its_first_answer(client, db):
    """The key is not read before the change: a retry whose change would now be refused
    (the request was closed since) is answered with the stored 201, not the refusal."""
    alice, key = customer(), _key()
    request_id = create(client, alice)["id"]
    headers = {**alice, "Idempotency-Key": key}
    reply = {"body": "Before the close"}
    first = client.post(f"{MOBILE}/{request_id}/messages", json=reply, headers=headers)
    assert first.status_code == 201
    move_to(client, admin(), request_id, "closed")
    again = client.post(f"{MOBILE}/{request_id}/messages", json=reply, headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert _count(db, "messages") == 2


def _statements_of(client: Any, headers: dict[str, str], body: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    STATEMENT_OBSERVERS.append(lambda sql, _values: seen.append(sql))
    try:
        assert client.post(MOBILE, json=body, headers=headers).status_code == 201
    finally:
        STATEMENT_OBSERVERS.pop()
    return seen


def test_a_keyed_create_costs_the_statements_of_one_without_a_key_on_postgresql(
    client, db, database_url
):
    """PostgreSQL: the ids are taken with the endpoints' read, and the answer is stored by
    the statement that creates the request: two statements, no BEGIN/COMMIT, with a key or
    without."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite stores the answer in the create's write transaction")
    alice = customer()
    # Warm: a process's first keyed write also sweeps expired answers (once a minute).
    _statements_of(client, {**alice, "Idempotency-Key": _key()}, BODY)
    without = _statements_of(client, alice, BODY)
    keyed = _statements_of(client, {**alice, "Idempotency-Key": _key()}, BODY)
    assert len(keyed) == len(without) == 2
    assert "nextval" in keyed[0] and "webhook_endpoints" in keyed[0]
    assert "INSERT INTO idempotency_records" in keyed[1]
    assert "INSERT INTO support_requests" in keyed[1]
    assert not any(sql in ("BEGIN", "COMMIT") for sql in keyed)


@pytest.mark.parametrize(
    "body",
    [
        BODY,
        {**BODY, "device": {"platform": "ios", "osVersion": "18.1", "appVersion": "4.2.1"}},
        {
            **BODY,
            "device": {
                "platform": "android",
                "osVersion": "15",
                "appVersion": "4.2.1",
                "appBuild": "421",
                "deviceModel": "Pixel 9",
                "locale": "de-DE",
                "timeZone": "Europe/Berlin",
            },
        },
    ],
    ids=["plain", "some-device", "whole-device"],
)
@pytest.mark.parametrize("who", ["named", "with-picture", "nameless"])
def test_a_keyed_create_stores_exactly_the_answer_it_gave(client, db, body, who):
    """The answer stored with a PostgreSQL create is rendered before the write, from the ids
    it took and the columns' defaults: it must be the request as stored, as a read of it
    shows it. Everywhere: the replay is the first answer, byte for byte."""
    claims: dict[str, Any] = {
        "named": {},
        "with-picture": {"picture": "https://example.com/a.png"},
        "nameless": {"name": None},
    }[who]
    alice, key = customer(**claims) if who != "nameless" else customer(None), _key()
    first = client.post(MOBILE, json=body, headers={**alice, "Idempotency-Key": key})
    again = client.post(MOBILE, json=body, headers={**alice, "Idempotency-Key": key})
    assert first.status_code == again.status_code == 201, first.text
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    with db.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT body, location FROM idempotency_records WHERE key = :key"),
            {"key": key},
        ).one()
    assert bytes(stored.body) == first.content
    assert stored.location == first.headers["location"]
    shown = client.get(first.headers["location"], headers=alice)
    assert shown.json()["data"] == first.json()["data"]
    assert _count(db, "support_requests") == 1
