"""Error mechanics: problem documents, bad ids, 405 ``Allow``, 413, 415, 500 and 503."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from starlette.testclient import TestClient

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.openapi import SPEC_PATH
from support_requests.storage.models import Base
from support_requests.storage.support_desk import SupportDesk
from tests.helpers import (
    MOBILE,
    SECRET,
    admin,
    assert_problem,
    create,
    customer,
    known_admin,
    move_to,
)

SPEC = yaml.safe_load(SPEC_PATH.read_text())
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BAD_IDS = ["abc", "1.5", "0x10", "9223372036854775808", "0", "-1", "\uff11", "1e3", "+1", "%20"]
LARGEST_ID = "9223372036854775807"
LIMIT = 64 * 1024
VALID = {"category": "account", "subject": "Locked out", "message": "Help."}


def _counts(db: sa.Engine) -> dict[str, int]:
    with db.connect() as connection:
        return {
            name: connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0
            for name, table in Base.metadata.tables.items()
            if name in ("support_requests", "messages", "request_events")
        }


def _id_operations() -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path template, operation) of the spec that takes ``{id}``."""
    return [
        (method, path, operation)
        for path, item in SPEC["paths"].items()
        if "{id}" in path
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _headers_for(client: Any, operation: dict[str, Any]) -> dict[str, str]:
    return known_admin(client) if "admin" in operation["tags"] else customer()


def _example_body(operation: dict[str, Any]) -> Any:
    body = operation.get("requestBody")
    return None if body is None else body["content"]["application/json"]["example"]


# -- every error is a problem document ----------------------------------------------------


def _closed_reply(client: Any) -> Any:
    alice = customer()
    created = create(client, alice)
    move_to(client, known_admin(client), created["id"], "closed")
    return client.post(f"{MOBILE}/{created['id']}/messages", json={"body": "?"}, headers=alice)


def _unexpected_failure(client: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    async def explode(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("SELECT password FROM secrets WHERE token = 'hunter2'")

    monkeypatch.setattr(SupportDesk, "list_for_customer", explode)
    return client.get(MOBILE, headers=customer())


SCENARIOS: dict[str, tuple[Callable[[Any, pytest.MonkeyPatch], Any], int, str]] = {
    "bad-id": (lambda c, _: c.get(f"{MOBILE}/abc", headers=customer()), 400, "invalid_path_param"),
    "malformed-json": (
        lambda c, _: c.post(
            MOBILE, content=b"{", headers={**customer(), "Content-Type": "application/json"}
        ),
        400,
        "malformed_body",
    ),
    "reply-on-closed": (lambda c, _: _closed_reply(c), 400, "request_closed"),
    "no-token": (lambda c, _: c.get(MOBILE), 401, "unauthenticated"),
    "admin-on-mobile": (lambda c, _: c.get(MOBILE, headers=admin()), 403, "forbidden"),
    "missing-request": (lambda c, _: c.get(f"{MOBILE}/42", headers=customer()), 404, "not_found"),
    "unknown-path": (
        lambda c, _: c.get("/api/mobile/tickets", headers=customer()),
        404,
        "not_found",
    ),
    "wrong-method": (
        lambda c, _: c.delete(MOBILE, headers=customer()),
        405,
        "method_not_allowed",
    ),
    "too-large": (
        lambda c, _: c.post(MOBILE, json={**VALID, "message": "m" * LIMIT}, headers=customer()),
        413,
        "payload_too_large",
    ),
    "not-json": (
        lambda c, _: c.post(
            MOBILE, content=b"hello", headers={**customer(), "Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    ),
    "invalid-field": (
        lambda c, _: c.post(MOBILE, json={**VALID, "category": "x"}, headers=customer()),
        422,
        "validation_failed",
    ),
    "unexpected-failure": (_unexpected_failure, 500, "internal_error"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_error_is_a_problem_document(client, monkeypatch, scenario):
    send, status, code = SCENARIOS[scenario]

    response = send(client, monkeypatch)

    body = assert_problem(response, status, code)
    assert response.headers["cache-control"] == "no-store"
    assert body["type"] == "about:blank"
    for leak in ("Traceback", "SELECT", "hunter2", "sqlalchemy", "RuntimeError", SECRET):
        assert leak not in response.text


def test_an_unreachable_database_is_503_with_retry_after(tmp_path: Path):
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:9/unreachable",
        jwt_secret=SECRET.encode(),
        data_dir=tmp_path,
        validate_responses=True,
    )
    # No lifespan: the app starts serving without ever reaching its database.
    client = TestClient(create_app(settings))

    responses = [
        client.get(MOBILE, headers=customer()),
        client.post(MOBILE, json=VALID, headers=customer()),
    ]

    for response in responses:
        body = assert_problem(response, 503, "service_unavailable")
        assert int(response.headers["retry-after"]) >= 1
        assert "127.0.0.1" not in response.text and "unreachable" not in body["detail"]


# -- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    _id_operations(),
    ids=[f"{method.upper()} {path}" for method, path, _ in _id_operations()],
)
def test_bad_id_is_400_on_every_operation_that_takes_one(client, db, method, path, operation):
    headers = _headers_for(client, operation)
    create(client, customer())
    before = _counts(db)

    for bad in BAD_IDS:
        response = client.request(
            method.upper(),
            path.replace("{id}", bad),
            json=_example_body(operation),
            headers=headers,
        )

        body = assert_problem(response, 400, "invalid_path_param")
        assert "positive integer" in body["detail"], bad
    assert _counts(db) == before


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    _id_operations(),
    ids=[f"{method.upper()} {path}" for method, path, _ in _id_operations()],
)
def test_largest_64_bit_id_is_valid_and_not_found(client, db, method, path, operation):
    headers = _headers_for(client, operation)
    before = _counts(db)

    response = client.request(
        method.upper(),
        path.replace("{id}", LARGEST_ID),
        json=_example_body(operation),
        headers=headers,
    )

    body = assert_problem(response, 404, "not_found")
    assert LARGEST_ID in body["detail"]
    assert _counts(db) == before


# -- 405 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "allow", "refused"),
    [
        (MOBILE, "GET, HEAD, POST", ["PUT", "PATCH", "DELETE", "OPTIONS"]),
        (f"{MOBILE}/1", "GET, HEAD", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        (f"{MOBILE}/1/messages", "POST", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        (f"{MOBILE}/abc", "GET, HEAD", ["DELETE"]),
    ],
)
def test_wrong_method_is_405_with_the_full_allow(client, db, path, allow, refused):
    alice = customer()
    create(client, alice)
    before = _counts(db)

    for method in refused:
        response = client.request(method, path, headers=alice)

        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == allow, method
        if method != "HEAD":
            body = assert_problem(response, 405, "method_not_allowed")
            assert allow in body["detail"]
    assert _counts(db) == before


def test_allow_names_every_operation_of_each_path_in_the_spec(client):
    headers = customer()
    for template, item in SPEC["paths"].items():
        declared = {m.upper() for m in item if m in HTTP_METHODS}
        if "GET" in declared:
            declared.add("HEAD")
        refused = next(m for m in ("DELETE", "PUT", "PATCH", "POST") if m not in declared)

        response = client.request(refused, template.replace("{id}", "1"), headers=headers)

        assert response.status_code == 405, (template, response.text)
        assert set(response.headers["allow"].split(", ")) == declared, template


def test_head_is_answered_where_allow_lists_it(client):
    alice = customer()
    created = create(client, alice)

    for path in (MOBILE, f"{MOBILE}/{created['id']}"):
        response = client.head(path, headers=alice)

        assert response.status_code == 200, path
        assert response.content == b""
        assert response.headers["content-type"] == "application/json"


# -- 413 -------------------------------------------------------------------------------------


def _chunks(body: bytes, size: int = 4096) -> Any:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _json_of_size(size: int) -> bytes:
    """A create body of exactly ``size`` bytes."""
    empty = b'{"category": "account", "subject": "s", "message": ""}'
    padding = size - len(empty)
    return empty.replace(b'"message": ""', b'"message": "' + b"m" * padding + b'"')


@pytest.mark.parametrize("target", ["create", "reply"])
def test_body_over_64_kib_is_413_and_stores_nothing(client, db, target):
    alice = customer()
    created = create(client, alice)
    path = MOBILE if target == "create" else f"{MOBILE}/{created['id']}/messages"
    before = _counts(db)
    json_headers = {**alice, "Content-Type": "application/json"}

    declared = client.post(path, content=_json_of_size(LIMIT + 1), headers=json_headers)
    chunked = client.post(path, content=_chunks(_json_of_size(LIMIT * 2)), headers=json_headers)

    for response in (declared, chunked):
        body = assert_problem(response, 413, "payload_too_large")
        assert "64 KiB" in body["detail"]
    assert "content-length" not in {k.lower() for k in chunked.request.headers}
    assert _counts(db) == before


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_content_length_that_is_not_a_number_is_400_not_413(client, db, method):
    """Schemathesis sent ``Content-Length: Y`` on a GET and got "larger than 64 KiB"."""
    alice = customer()
    headers = {**alice, "Content-Type": "application/json", "Content-Length": "Y"}

    response = client.request(method, MOBILE, headers=headers)

    body = assert_problem(response, 400, "malformed_body")
    assert "Content-Length" in body["detail"]
    assert _counts(db)["support_requests"] == 0


def test_body_of_exactly_64_kib_is_read(client, db):
    alice = customer()

    response = client.post(
        MOBILE, content=_json_of_size(LIMIT), headers={**alice, "Content-Type": "application/json"}
    )

    body = assert_problem(response, 422, "validation_failed")
    assert [entry["field"] for entry in body["errors"]] == ["message"]
    assert _counts(db)["support_requests"] == 0


def test_chunked_body_under_the_limit_is_accepted(client, db):
    alice = customer()
    content = b'{"category": "other", "subject": "Chunked", "message": "' + b"x" * 4900 + b'"}'

    response = client.post(
        MOBILE, content=_chunks(content), headers={**alice, "Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert response.json()["data"]["subject"] == "Chunked"
    assert _counts(db) == {"support_requests": 1, "messages": 1, "request_events": 1}


# -- 415 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", b'{"category": "account", "subject": "s", "message": "m"}'),
        ("application/x-www-form-urlencoded", b"category=account&subject=s&message=m"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\n\r\nm\r\n--xyz--\r\n"),
        ("application/xml", b"<request><category>account</category></request>"),
    ],
)
@pytest.mark.parametrize("target", ["create", "reply"])
def test_non_json_content_type_is_415_and_stores_nothing(client, db, content_type, content, target):
    alice = customer()
    created = create(client, alice)
    path = MOBILE if target == "create" else f"{MOBILE}/{created['id']}/messages"
    before = _counts(db)

    response = client.post(path, content=content, headers={**alice, "Content-Type": content_type})

    body = assert_problem(response, 415, "unsupported_media_type")
    assert "application/json" in body["detail"]
    assert _counts(db) == before


def test_error_responses_do_not_echo_the_offending_value(client):
    marker = f"<b>{uuid.uuid4().hex}<b>"

    responses = [
        client.get(f"{MOBILE}/{marker}", headers=customer()),
        client.post(MOBILE, json={**VALID, "category": marker}, headers=customer()),
        client.post(MOBILE, json={**VALID, "subject": marker * 100}, headers=customer()),
    ]

    assert [r.status_code for r in responses] == [400, 422, 422]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert marker[3:35] not in response.text


def test_an_id_of_thousands_of_digits_is_400_not_500(client):
    response = client.get(f"{MOBILE}/{'9' * 5000}", headers=customer())
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_path_param"
