"""Creating a support request: ``POST /api/mobile/support-requests``."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from support_requests.storage.models import Base
from tests.helpers import (
    MOBILE,
    TIMESTAMP_PATTERN,
    assert_problem,
    bearer,
    error_fields,
    mint,
    refusing_message_inserts,
    stored_request,
    stored_rows,
)

CATEGORIES = ["account", "payment", "technical", "other"]
VALID = {"category": "account", "subject": "Unable to log in", "message": "I cannot log in."}


def _customer(**claims: Any) -> tuple[str, dict[str, str]]:
    sub = f"customer-{uuid.uuid4().hex}"
    return sub, bearer(mint(sub, **claims))


def _row_counts(db: sa.Engine) -> dict[str, int]:
    with db.connect() as connection:
        return {
            name: connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0
            for name, table in Base.metadata.tables.items()
            if name in ("support_requests", "messages", "request_events")
        }


def _parse(timestamp: str) -> datetime:
    assert re.fullmatch(TIMESTAMP_PATTERN, timestamp), timestamp
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _post_raw(client: Any, headers: dict[str, str], content: bytes) -> Any:
    return client.post(
        MOBILE, content=content, headers={**headers, "Content-Type": "application/json"}
    )


def test_create_returns_201_with_location_and_the_full_detail(client, db):
    sub, headers = _customer(name="Alex Customer", picture="https://cdn.example.com/alex.png")
    before = datetime.now(UTC) - timedelta(milliseconds=1)

    response = client.post(
        MOBILE,
        json={
            "category": "account",
            "subject": "Unable to log in",
            "message": "I cannot log in on Android.",
        },
        headers=headers,
    )

    after = datetime.now(UTC) + timedelta(milliseconds=1)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["message"] == "Support request created successfully"
    data = body["data"]
    assert response.headers["location"] == f"{MOBILE}/{data['id']}"
    created_at = data["createdAt"]
    assert before <= _parse(created_at) <= after
    message_id = data["messages"][0]["id"]
    assert data == {
        "id": data["id"],
        "category": "account",
        "subject": "Unable to log in",
        "status": "open",
        "isAssigned": False,
        "resolutionNote": None,
        "resolvedAt": None,
        "closedAt": None,
        "lastCustomerMessageAt": created_at,
        "lastAdminMessageAt": None,
        "createdAt": created_at,
        "updatedAt": created_at,
        "allowedActions": ["reply"],
        "rating": None,
        "unreadCount": 0,
        "lastReadMessageId": None,
        "messages": [
            {
                "id": message_id,
                "authorType": "customer",
                "authorName": "Alex Customer",
                "authorImage": "https://cdn.example.com/alex.png",
                "body": "I cannot log in on Android.",
                "attachments": [],
                "createdAt": created_at,
            }
        ],
        "device": None,
    }

    row = stored_request(db, data["id"])
    assert row["customer_id"] == sub
    assert row["customer_name"] == "Alex Customer"
    assert row["customer_image"] == "https://cdn.example.com/alex.png"
    assert (row["category"], row["subject"], row["status"]) == (
        "account",
        "Unable to log in",
        "open",
    )
    assert row["assigned_admin_id"] is None
    assert row["resolution_note"] is None and row["resolved_at"] is None
    assert row["closed_at"] is None and row["last_admin_message_at"] is None
    messages = stored_rows(db, "messages", data["id"])
    assert [
        (m["id"], m["author_type"], m["author_id"], m["author_name"], m["author_image"], m["body"])
        for m in messages
    ] == [
        (
            message_id,
            "customer",
            sub,
            "Alex Customer",
            "https://cdn.example.com/alex.png",
            "I cannot log in on Android.",
        )
    ]
    assert [event["type"] for event in stored_rows(db, "request_events", data["id"])] == ["created"]


def test_location_names_the_created_request(client):
    _, headers = _customer()
    created = client.post(MOBILE, json=VALID, headers=headers)
    assert created.status_code == 201

    fetched = client.get(created.headers["location"], headers=headers)

    assert fetched.status_code == 200
    assert fetched.json()["data"] == created.json()["data"]


def test_author_name_and_image_are_null_without_the_claims(client, db):
    _, headers = _customer()

    response = client.post(MOBILE, json=VALID, headers=headers)

    assert response.status_code == 201, response.text
    message = response.json()["data"]["messages"][0]
    assert message["authorName"] is None
    assert message["authorImage"] is None
    row = stored_rows(db, "messages", response.json()["data"]["id"])[0]
    assert row["author_name"] is None and row["author_image"] is None
    request = stored_request(db, response.json()["data"]["id"])
    assert request["customer_name"] is None and request["customer_image"] is None


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_is_accepted(client, db, category):
    _, headers = _customer()

    response = client.post(MOBILE, json={**VALID, "category": category}, headers=headers)

    assert response.status_code == 201, response.text
    assert response.json()["data"]["category"] == category
    assert stored_request(db, response.json()["data"]["id"])["category"] == category


def test_subject_and_message_are_stored_trimmed(client, db):
    _, headers = _customer()
    subject = "S" * 150
    message = "M" * 5000

    response = client.post(
        MOBILE,
        json={"category": "other", "subject": f"  \t{subject} \n", "message": f"\n {message}  "},
        headers=headers,
    )

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["subject"] == subject
    assert data["messages"][0]["body"] == message
    assert stored_request(db, data["id"])["subject"] == subject
    assert stored_rows(db, "messages", data["id"])[0]["body"] == message


def test_inner_whitespace_and_one_character_texts_are_kept(client, db):
    _, headers = _customer()

    response = client.post(
        MOBILE,
        json={"category": "other", "subject": "x", "message": "line one\n\n  line  two"},
        headers=headers,
    )

    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["subject"] == "x"
    assert data["messages"][0]["body"] == "line one\n\n  line  two"
    assert stored_rows(db, "messages", data["id"])[0]["body"] == "line one\n\n  line  two"


def test_lengths_count_characters_not_bytes(client, db):
    _, headers = _customer()
    subject = "🚀" * 150
    message = "ש" * 5000

    accepted = client.post(
        MOBILE, json={"category": "other", "subject": subject, "message": message}, headers=headers
    )
    refused = client.post(
        MOBILE,
        json={"category": "other", "subject": "🚀" * 151, "message": "ש" * 5001},
        headers=headers,
    )

    assert accepted.status_code == 201, accepted.text
    assert stored_request(db, accepted.json()["data"]["id"])["subject"] == subject
    body = assert_problem(refused, 422, "validation_failed")
    assert error_fields(body) == ["subject", "message"]
    assert _row_counts(db)["support_requests"] == 1


def test_unicode_round_trips(client, db):
    sub, headers = _customer(name="José 👩‍💻 محمد", picture="https://cdn.example.com/j.png")
    subject = "التطبيق يتعطل 🚀 при оплате"
    message = "שלום! 👨‍👩‍👧‍👦 e\u0301 漢字 — مرحبا بالعالم 🇺🇦"

    created = client.post(
        MOBILE,
        json={"category": "technical", "subject": subject, "message": message},
        headers=headers,
    )

    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["subject"] == subject
    assert data["messages"][0]["body"] == message
    assert data["messages"][0]["authorName"] == "José 👩‍💻 محمد"
    fetched = client.get(f"{MOBILE}/{data['id']}", headers=headers).json()["data"]
    assert fetched == data
    assert stored_request(db, data["id"])["subject"] == subject
    stored = stored_rows(db, "messages", data["id"])[0]
    assert (stored["body"], stored["author_name"], stored["author_id"]) == (
        message,
        "José 👩‍💻 محمد",
        sub,
    )


# -- 422: every field error listed, one entry a field -----------------------------

CATEGORY_MESSAGE = "must be one of: account, payment, technical, other"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({**VALID, "category": "billing"}, {"category": CATEGORY_MESSAGE}, id="bad"),
        pytest.param({**VALID, "category": "Account"}, {"category": CATEGORY_MESSAGE}, id="case"),
        pytest.param({**VALID, "category": ""}, {"category": CATEGORY_MESSAGE}, id="empty-cat"),
        pytest.param(
            {"subject": "s", "message": "m"}, {"category": "is required"}, id="no-category"
        ),
        pytest.param(
            {"category": "other", "message": "m"}, {"subject": "is required"}, id="no-subject"
        ),
        pytest.param(
            {"category": "other", "subject": "s"}, {"message": "is required"}, id="no-message"
        ),
        pytest.param({**VALID, "subject": ""}, {"subject": None}, id="empty-subject"),
        pytest.param({**VALID, "subject": " \t\n\u00a0 "}, {"subject": None}, id="blank-subject"),
        pytest.param({**VALID, "subject": "s" * 151}, {"subject": None}, id="long-subject"),
        pytest.param(
            {**VALID, "subject": "  " + "s" * 151 + "  "}, {"subject": None}, id="long-trimmed"
        ),
        pytest.param({**VALID, "subject": "a\u0000b"}, {"subject": None}, id="nul-subject"),
        pytest.param({**VALID, "message": ""}, {"message": None}, id="empty-message"),
        pytest.param({**VALID, "message": "\n\n   \t"}, {"message": None}, id="blank-message"),
        pytest.param({**VALID, "message": "m" * 5001}, {"message": None}, id="long-message"),
        pytest.param({**VALID, "message": "\u0000"}, {"message": None}, id="nul-message"),
        pytest.param(
            {**VALID, "priority": "high"}, {"priority": "is not a known field"}, id="unknown"
        ),
        pytest.param({**VALID, "category": 1}, {"category": "must be a string"}, id="int-cat"),
        pytest.param({**VALID, "subject": 42}, {"subject": "must be a string"}, id="int-subject"),
        pytest.param(
            {**VALID, "message": ["m"]}, {"message": "must be a string"}, id="list-message"
        ),
        pytest.param({**VALID, "subject": None}, {"subject": "must be a string"}, id="null"),
        pytest.param([VALID], {"body": "must be an object"}, id="array-body"),
        pytest.param("text", {"body": "must be an object"}, id="string-body"),
        pytest.param(
            {},
            {"category": "is required", "subject": "is required", "message": "is required"},
            id="empty-object",
        ),
        pytest.param(
            {"category": "x", "subject": " ", "message": "", "id": 5},
            {
                "id": "is not a known field",
                "category": CATEGORY_MESSAGE,
                "subject": None,
                "message": None,
            },
            id="everything-wrong",
        ),
    ],
)
def test_invalid_create_is_422_listing_each_field_and_stores_nothing(client, db, body, expected):
    _, headers = _customer()

    response = client.post(MOBILE, json=body, headers=headers)

    problem = assert_problem(response, 422, "validation_failed")
    assert sorted(error_fields(problem)) == sorted(expected)
    assert len(set(error_fields(problem))) == len(problem["errors"])
    for entry in problem["errors"]:
        wanted = expected[entry["field"]]
        if wanted is None:
            limit = "150" if entry["field"] == "subject" else "5000"
            assert f"1 to {limit} characters" in entry["message"], entry
        else:
            assert entry["message"] == wanted
    count = len(expected)
    assert problem["detail"] == f"The request has {count} invalid field{'s' * (count != 1)}."
    assert response.headers["cache-control"] == "no-store"
    assert _row_counts(db) == {"support_requests": 0, "messages": 0, "request_events": 0}


# -- 400: bodies that are not JSON text ---------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"category": "account", "subject": "s"', id="truncated"),
        pytest.param(b'{"category": "account"} trailing', id="trailing-garbage"),
        pytest.param(b"{'category': 'account'}", id="single-quotes"),
        pytest.param(b"", id="empty"),
        pytest.param(b"   ", id="blank"),
        pytest.param(
            b'{"category": "account", "subject": "caf\xe9", "message": "m"}', id="latin-1"
        ),
        pytest.param(b'{"category": "account", "subject": "\xff\xfe", "message": "m"}', id="ff"),
        pytest.param(
            b'{"category": "account", "subject": "a\\ud800b", "message": "m"}',
            id="lone-surrogate",
        ),
    ],
)
def test_malformed_body_is_400_and_stores_nothing(client, db, content):
    _, headers = _customer()

    response = _post_raw(client, headers, content)

    assert_problem(response, 400, "malformed_body")
    assert _row_counts(db) == {"support_requests": 0, "messages": 0, "request_events": 0}


def test_json_with_a_charset_parameter_is_accepted(client):
    _, headers = _customer()

    response = client.post(
        MOBILE,
        content=b'{"category": "payment", "subject": "s", "message": "m"}',
        headers={**headers, "Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 201, response.text
    assert response.json()["data"]["category"] == "payment"


def test_create_rolls_back_when_the_message_insert_fails(client, db):
    """Create is one transaction: a failing message insert leaves no request behind."""
    _, headers = _customer()

    with refusing_message_inserts(db):
        response = client.post(MOBILE, json=VALID, headers=headers)

    problem = assert_problem(response, 500, "internal_error")
    assert "refused" not in response.text and "INSERT" not in response.text
    assert problem["detail"] == "The server could not answer this request."
    assert _row_counts(db) == {"support_requests": 0, "messages": 0, "request_events": 0}
    # The service is fine afterwards: the next create goes through.
    assert client.post(MOBILE, json=VALID, headers=headers).status_code == 201
    assert _row_counts(db) == {"support_requests": 1, "messages": 1, "request_events": 1}


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", "Application/Json; charset=utf-8"])
def test_media_types_are_case_insensitive(client, db, content_type):
    """RFC 9110: ``APPLICATION/JSON`` is ``application/json``, for validation and handler alike."""
    _, headers = _customer()
    response = client.post(
        MOBILE, content=json.dumps(VALID), headers={**headers, "Content-Type": content_type}
    )

    assert response.status_code == 201, response.text
    assert response.json()["data"]["subject"] == VALID["subject"]
    assert _row_counts(db) == {"support_requests": 1, "messages": 1, "request_events": 1}


def test_a_body_without_a_content_type_is_415_and_nothing_is_stored(client, db):
    _, headers = _customer()
    created = client.post(MOBILE, json=VALID, headers=headers).json()["data"]
    bare = {name: value for name, value in headers.items() if name.lower() != "content-type"}

    create = client.post(MOBILE, content=json.dumps(VALID).encode(), headers=bare)
    reply = client.post(
        f"{MOBILE}/{created['id']}/messages", content=b'{"body": "hello"}', headers=bare
    )

    for response in (create, reply):
        problem = assert_problem(response, 415, "unsupported_media_type")
        assert problem["detail"] == "The body must be sent as application/json."
    assert _row_counts(db) == {"support_requests": 1, "messages": 1, "request_events": 1}
