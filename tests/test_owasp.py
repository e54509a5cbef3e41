"""OWASP API Security Top 10 (2023) items that apply, each test named after its item.

Operations are taken from the spec, so a new operation is covered without editing here.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
import yaml

from support_requests.handlers.operations import OPERATIONS
from support_requests.openapi import SPEC_PATH
from tests.helpers import ADMIN, MOBILE, SECRET, admin, bearer, create, customer, mint

SPEC = yaml.safe_load(SPEC_PATH.read_text())
METHODS = ("get", "post", "put", "patch", "delete")
SAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "createSupportRequest": {
        "category": "other",
        "subject": "s",
        "message": "m",
    },
    "replyToSupportRequest": {"body": "hello"},
    "adminReplyToSupportRequest": {"body": "hello"},
    "adminUpdateSupportRequest": {"status": "in_progress"},
}


def _operations(tag: str | None = None) -> list[tuple[str, str, str]]:
    found = []
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation and (tag is None or tag in operation.get("tags", [])):
                found.append((method.upper(), path, operation["operationId"]))
    return found


def _call(
    client: Any, method: str, path: str, operation_id: str, headers: dict[str, str], rid: int
):
    url = path.replace("{id}", str(rid))
    body = SAMPLE_BODIES.get(operation_id)
    return client.request(method, url, json=body, headers=headers)


def _now() -> int:
    return int(time.time())


BAD_TOKENS = {
    "missing": None,
    "not a JWT": "not-a-jwt",
    "wrong key": mint("mallory", secret="another-secret-" + "y" * 40),
    "expired": mint("mallory", ttl=-60),
    "alg none": jwt.encode({"sub": "mallory", "exp": _now() + 60}, None, algorithm="none"),
    "other algorithm": jwt.encode(
        {"sub": "mallory", "exp": _now() + 60}, SECRET * 2, algorithm="HS512"
    ),
    "no sub": jwt.encode({"exp": _now() + 60}, SECRET, algorithm="HS256"),
    "no exp": jwt.encode({"sub": "mallory"}, SECRET, algorithm="HS256"),
}

PROTECTED_OPERATIONS = [
    op for op in _operations() if OPERATIONS[op[2]].__module__.endswith((".mobile", ".admin"))
]


@pytest.mark.parametrize(("method", "path", "operation_id"), PROTECTED_OPERATIONS)
def test_api2_broken_authentication_every_bad_token_on_every_operation_is_401(
    client, db, method, path, operation_id
):
    rid = create(client, customer())["id"]
    for name, token in BAD_TOKENS.items():
        headers = {} if token is None else bearer(token)
        response = _call(client, method, path, operation_id, headers, rid)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert response.json()["code"] == "unauthenticated", name
    with db.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM messages")) == 1


def _without_ids(text: str) -> str:
    return re.sub(r"\d+", "N", re.sub(r',?"requestId":"[^"]*"', "", text))


def test_api1_object_level_authorization_walking_ids_as_another_user_finds_nothing(client, db):
    alice, mallory = customer(), customer()
    owned = [create(client, alice)["id"] for _ in range(3)]
    bodies = set()
    for rid in range(1, max(owned) + 4):
        read = client.get(f"{MOBILE}/{rid}", headers=mallory)
        reply = client.post(f"{MOBILE}/{rid}/messages", json={"body": "mine?"}, headers=mallory)
        assert read.status_code == reply.status_code == 404
        bodies.update(_without_ids(response.text) for response in (read, reply))
    listed = client.get(MOBILE, headers=mallory).json()
    assert listed["data"] == []
    assert len(bodies) == 1
    with db.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM messages")) == 3


@pytest.mark.parametrize(
    "extra",
    [
        {"status": "closed"},
        {"assignedAdminId": str(uuid.uuid4())},
        {"id": 99},
        {"isAssigned": True},
        {"createdAt": "2020-01-01T00:00:00.000Z"},
        {"resolutionNote": "done"},
        {"customerId": "someone-else"},
        {"authorType": "admin"},
    ],
)
def test_api3_property_level_a_customer_cannot_set_protected_fields(client, db, extra):
    alice = customer()
    rid = create(client, alice)["id"]
    created = client.post(
        MOBILE, json={"category": "other", "subject": "s", "message": "m", **extra}, headers=alice
    )
    replied = client.post(f"{MOBILE}/{rid}/messages", json={"body": "b", **extra}, headers=alice)
    for response in (created, replied):
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == list(extra)
    with db.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM support_requests")) == 1
        assert connection.scalar(sa.text("SELECT count(*) FROM messages")) == 1
        assert connection.scalar(sa.text("SELECT status FROM support_requests")) == "open"


@pytest.mark.parametrize("extra", [{"id": 5}, {"customer": {"id": "x"}}, {"closedAt": None}])
def test_api3_property_level_an_admin_cannot_set_read_only_fields(client, db, extra):
    rid = create(client, customer())["id"]
    response = client.patch(
        f"{ADMIN}/{rid}", json={"status": "in_progress", **extra}, headers=admin()
    )
    assert response.status_code == 422
    with db.connect() as connection:
        assert connection.scalar(sa.text("SELECT status FROM support_requests")) == "open"


def test_api4_resource_consumption_bodies_pages_and_nesting_are_bounded(client, db):
    alice = customer()
    huge = {"category": "other", "subject": "s", "message": "m" * (70 * 1024)}
    assert client.post(MOBILE, json=huge, headers=alice).status_code == 413
    assert client.get(MOBILE, params={"limit": 101}, headers=alice).status_code == 422
    nested = b"[" * 30000 + b"]" * 30000
    response = client.post(
        MOBILE, content=nested, headers={**alice, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    with db.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM support_requests")) == 0


@pytest.mark.parametrize(("method", "path", "operation_id"), _operations("admin"))
def test_api5_function_level_a_customer_token_on_every_admin_operation_is_403(
    client, method, path, operation_id
):
    rid = create(client, customer())["id"]
    response = _call(client, method, path, operation_id, customer(), rid)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path", "operation_id"), _operations("mobile"))
def test_api5_function_level_an_admin_token_on_every_mobile_operation_is_403(
    client, method, path, operation_id
):
    rid = create(client, customer())["id"]
    response = _call(client, method, path, operation_id, admin(), rid)
    assert response.status_code == 403


@pytest.mark.parametrize("path", list(SPEC["paths"]))
def test_api5_function_level_every_undeclared_method_is_405_with_allow(client, path):
    declared = {m.upper() for m in METHODS if m in SPEC["paths"][path]}
    allow = declared | ({"HEAD"} if "GET" in declared else set())
    url = path.replace("{id}", "1")
    for method in sorted({m.upper() for m in METHODS} - declared):
        response = client.request(method, url, headers=customer())
        assert response.status_code == 405, (method, url)
        assert set(response.headers["allow"].split(", ")) == allow
        assert response.json()["code"] == "method_not_allowed"


def test_api8_misconfiguration_authenticated_responses_are_not_cached(client):
    alice = customer()
    rid = create(client, alice)["id"]
    for response in (
        client.post(f"{MOBILE}/{rid}/messages", json={"body": "x"}, headers=alice),
        client.get(f"{MOBILE}/999999", headers=alice),
    ):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
    # The polled list and detail: never in a shared cache, revalidated before each use.
    for response in (
        client.get(MOBILE, headers=alice),
        client.get(f"{MOBILE}/{rid}", headers=alice),
    ):
        assert response.headers["cache-control"] == "private, no-cache"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_api8_misconfiguration_an_unexpected_error_shows_no_internals(client, monkeypatch):
    from support_requests.storage.support_desk import SupportDesk

    async def explode(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("SELECT secret FROM internals /srv/app.py line 3")

    monkeypatch.setattr(SupportDesk, "list_for_customer", explode)
    response = client.get(MOBILE, headers=customer())
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    for leak in ("Traceback", "RuntimeError", "SELECT", "secret", ".py"):
        assert leak not in response.text
