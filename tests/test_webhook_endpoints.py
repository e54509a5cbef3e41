"""Webhook endpoints (``/api/admin/webhooks``): registration with its secret shown once and
stored sealed, the SSRF refusals, events, changes, deliveries, retry, ping and removal.
Nothing is delivered here (that is the workers'): the tests read the rows."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from support_requests.domain.webhooks import EVENT_TYPES, PING
from support_requests.handlers.settings import Settings
from support_requests.openapi import SPEC_PATH
from support_requests.storage.models import Base
from support_requests.webhooks.secrets import SEALED, SecretBox
from tests.helpers import (
    TIMESTAMP_PATTERN,
    admin,
    assert_problem,
    bearer,
    error_fields,
    loopback_lookup,
    mint,
    webhook_client,
)

WEBHOOKS = "/api/admin/webhooks"
PUBLIC_URL = "https://hooks.example.test/support"
SECRET_KEY = b"operator-secret-key-" + b"k" * 20
ENDPOINT_FIELDS = {
    "id",
    "url",
    "events",
    "description",
    "enabled",
    "disabledReason",
    "createdAt",
    "updatedAt",
}
DELIVERY_FIELDS = {
    "id",
    "eventId",
    "eventType",
    "status",
    "attempts",
    "lastResponseStatus",
    "lastError",
    "lastAttemptAt",
    "nextAttemptAt",
    "createdAt",
    "completedAt",
}


@pytest.fixture
def client(settings: Settings) -> Iterator[Any]:
    """The app with loopback and plain http allowed (most tests register local URLs)."""
    with webhook_client(settings, webhook_allow_private=True, webhook_allow_http=True) as c:
        yield c


@pytest.fixture
def strict(settings: Settings) -> Iterator[Any]:
    """The app as deployed: https only, public addresses only."""
    with webhook_client(settings) as c:
        yield c


def add(client: Any, headers: dict[str, str], **fields: Any) -> Any:
    body = {"url": "http://127.0.0.1:9/hook", "events": list(EVENT_TYPES), **fields}
    return client.post(WEBHOOKS, json=body, headers=headers)


def added(client: Any, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = add(client, headers, **fields)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def rows(db: sa.Engine, table_name: str) -> list[dict[str, Any]]:
    """The table's rows as stored (typed by the models), in key order."""
    table = Base.metadata.tables[table_name]
    with db.connect() as connection:
        found = connection.execute(table.select().order_by(*table.primary_key.columns))
        return [dict(row._mapping) for row in found]


def ping(client: Any, headers: dict[str, str], endpoint_id: str) -> dict[str, Any]:
    response = client.post(f"{WEBHOOKS}/{endpoint_id}/ping", headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json()["data"])


def set_delivery(db: sa.Engine, delivery_id: int, **values: Any) -> None:
    """What a worker would have written after its attempts."""
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    with db.begin() as connection:
        connection.execute(
            sa.text(f"UPDATE webhook_deliveries SET {assignments} WHERE id = :id"),
            {**values, "id": delivery_id},
        )


# -- registration and the secret ----------------------------------------------------------


def test_registration_shows_the_secret_once_and_no_other_answer_does(client: Any) -> None:
    agent = admin()

    response = add(client, agent, description="  The app backend  ")

    assert response.status_code == 201, response.text
    endpoint = response.json()["data"]
    secret = endpoint.pop("secret")
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{32}", secret)
    assert set(endpoint) == ENDPOINT_FIELDS
    assert response.headers["location"] == f"{WEBHOOKS}/{endpoint['id']}"
    assert endpoint["description"] == "The app backend"
    assert (endpoint["enabled"], endpoint["disabledReason"]) == (True, None)
    assert re.fullmatch(TIMESTAMP_PATTERN, endpoint["createdAt"])
    later = [
        client.get(WEBHOOKS, headers=agent),
        client.get(f"{WEBHOOKS}/{endpoint['id']}", headers=agent),
        client.patch(f"{WEBHOOKS}/{endpoint['id']}", json={"enabled": False}, headers=agent),
        client.post(f"{WEBHOOKS}/{endpoint['id']}/ping", headers=agent),
    ]
    for answer in later:
        assert answer.status_code in (200, 202), answer.text
        assert secret not in answer.text
        assert "secret" not in answer.text
    changed = later[2].json()["data"]
    assert client.get(WEBHOOKS, headers=agent).json()["data"] == [
        {
            **endpoint,
            "enabled": False,
            "disabledReason": "manual",
            "updatedAt": changed["updatedAt"],
        }
    ]


def test_the_secret_is_stored_sealed_when_a_secret_key_is_set(settings: Settings, db: Any) -> None:
    with webhook_client(
        settings, webhook_allow_private=True, webhook_allow_http=True, secret_key=SECRET_KEY
    ) as client:
        secret = added(client, admin())["secret"]

    [row] = rows(db, "webhook_endpoints")
    assert row["secret"].startswith(SEALED)
    assert secret not in row["secret"]
    assert secret[len("whsec_") :] not in row["secret"]
    assert SecretBox(SECRET_KEY).open(row["secret"]) == secret


def test_the_secret_is_stored_as_issued_without_a_secret_key(client: Any, db: Any) -> None:
    secret = added(client, admin())["secret"]

    [row] = rows(db, "webhook_endpoints")
    assert row["secret"] == secret


def test_registration_stores_who_registered_it_and_the_events_in_the_contracts_order(
    client: Any, db: Any
) -> None:
    agent = admin(admin_id="0b4c2d9e-5f1a-4c3b-9d8e-7f6a5b4c3d2e")

    endpoint = added(client, agent, events=["notification.push", "support_request.created"])

    assert endpoint["events"] == ["support_request.created", "notification.push"]
    [row] = rows(db, "webhook_endpoints")
    assert row["created_by"] == "0b4c2d9e-5f1a-4c3b-9d8e-7f6a5b4c3d2e"
    assert row["events"] == ["support_request.created", "notification.push"]
    assert row["enabled"] is True


# -- SSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "must be https"),
        ("https://localhost/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.0.0.1/hook", "private"),
        ("https://100.64.0.1/hook", "not a public address"),
        ("https://[::1]:8443/hook", "loopback"),
        ("http://hooks.example.test/hook", "must be https"),
        ("https://nowhere.invalid/hook", "does not resolve"),
        ("https://user:pass@hooks.example.test/hook", "user name or password"),
    ],
)
def test_a_url_the_service_must_not_call_is_refused_with_422_on_url(
    strict: Any, db: Any, url: str, reason: str
) -> None:
    response = add(strict, admin(), url=url)

    problem = assert_problem(response, 422, "validation_failed")
    assert error_fields(problem) == ["url"]
    assert reason in problem["errors"][0]["message"]
    assert rows(db, "webhook_endpoints") == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "https://localhost/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://169.254.169.254/hook",
        "https://10.0.0.1/hook",
        "https://100.64.0.1/hook",
    ],
)
def test_private_addresses_and_http_are_allowed_with_the_switches_on(
    client: Any, db: Any, url: str
) -> None:
    endpoint = added(client, admin(), url=url)

    assert endpoint["url"] == url
    assert [row["url"] for row in rows(db, "webhook_endpoints")] == [url]


def test_a_public_https_url_is_registered_with_the_switches_off(strict: Any, db: Any) -> None:
    endpoint = added(strict, admin(), url=PUBLIC_URL)

    assert endpoint["url"] == PUBLIC_URL
    assert len(rows(db, "webhook_endpoints")) == 1


def test_a_change_of_url_is_checked_as_a_registration_is(strict: Any, db: Any) -> None:
    agent = admin()
    endpoint = added(strict, agent, url=PUBLIC_URL)

    response = strict.patch(
        f"{WEBHOOKS}/{endpoint['id']}", json={"url": "https://10.0.0.1/hook"}, headers=agent
    )

    problem = assert_problem(response, 422, "validation_failed")
    assert error_fields(problem) == ["url"]
    assert [row["url"] for row in rows(db, "webhook_endpoints")] == [PUBLIC_URL]


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.test/x", "https://" + "a" * 2048, "https://has space.test/"]
)
def test_a_url_that_breaks_the_schema_is_422(client: Any, db: Any, url: str) -> None:
    problem = assert_problem(add(client, admin(), url=url), 422, "validation_failed")

    assert error_fields(problem) == ["url"]
    assert rows(db, "webhook_endpoints") == []


def test_the_test_resolver_answers_without_dns() -> None:
    def lookup(host: str) -> list[str]:
        return asyncio.run(loopback_lookup(host, 443))

    assert lookup("hooks.example.test") == ["93.184.216.34"]
    assert lookup("localhost") == ["127.0.0.1", "::1"]
    assert lookup("::ffff:127.0.0.1") == ["::ffff:7f00:1"]
    with pytest.raises(OSError):
        lookup("example.com")


# -- events and other fields ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"events": ["support_request.deleted"]}, "events.0"),
        ({"events": [PING]}, "events.0"),
        ({"events": []}, "events"),
        ({"events": ["notification.push", "notification.push"]}, "events"),
        ({"description": "two\nlines"}, "description"),
        ({"description": "d" * 501}, "description"),
        ({"secret": "whsec_mine"}, "secret"),
    ],
)
def test_events_and_fields_that_break_the_schema_are_422(
    client: Any, db: Any, fields: dict[str, Any], field: str
) -> None:
    problem = assert_problem(add(client, admin(), **fields), 422, "validation_failed")

    assert error_fields(problem) == [field]
    assert rows(db, "webhook_endpoints") == []


def test_the_spec_offers_exactly_the_event_types_the_service_sends() -> None:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    assert tuple(spec["components"]["schemas"]["WebhookEventType"]["enum"]) == EVENT_TYPES


# -- reading and changing ---------------------------------------------------------------------


def test_endpoints_are_listed_oldest_first_and_read_one_by_one(client: Any) -> None:
    agent = admin()
    first = added(client, agent)
    second = added(client, agent, url="http://127.0.0.1:10/other", events=["support_request.rated"])
    first.pop("secret"), second.pop("secret")

    listed = client.get(WEBHOOKS, headers=agent)
    one = client.get(f"{WEBHOOKS}/{second['id']}", headers=agent)

    assert listed.status_code == 200
    assert listed.json()["data"] == [first, second]
    assert one.status_code == 200
    assert one.json()["data"] == second


def test_an_unknown_endpoint_is_404_for_every_operation(client: Any) -> None:
    agent, unknown = admin(), "whe_" + "A" * 22
    answers = [
        client.get(f"{WEBHOOKS}/{unknown}", headers=agent),
        client.patch(f"{WEBHOOKS}/{unknown}", json={"enabled": True}, headers=agent),
        client.delete(f"{WEBHOOKS}/{unknown}", headers=agent),
        client.get(f"{WEBHOOKS}/{unknown}/deliveries", headers=agent),
        client.post(f"{WEBHOOKS}/{unknown}/ping", headers=agent),
        client.post(f"{WEBHOOKS}/{unknown}/deliveries/1/retry", headers=agent),
    ]

    for answer in answers:
        assert_problem(answer, 404, "not_found")


def test_a_malformed_endpoint_id_is_400(client: Any) -> None:
    assert_problem(client.get(f"{WEBHOOKS}/nope", headers=admin()), 400, "invalid_path_param")


def test_a_patch_changes_only_what_it_names(client: Any, db: Any) -> None:
    agent = admin()
    endpoint = added(client, agent, description="Backend")

    response = client.patch(
        f"{WEBHOOKS}/{endpoint['id']}",
        json={"events": ["support_request.rated"], "url": "http://127.0.0.1:11/new"},
        headers=agent,
    )

    assert response.status_code == 200, response.text
    changed = response.json()["data"]
    assert (changed["url"], changed["events"]) == (
        "http://127.0.0.1:11/new",
        ["support_request.rated"],
    )
    assert (changed["description"], changed["enabled"]) == ("Backend", True)
    assert changed["updatedAt"] >= endpoint["updatedAt"]
    [row] = rows(db, "webhook_endpoints")
    assert (row["url"], row["events"], row["secret"]) == (
        "http://127.0.0.1:11/new",
        ["support_request.rated"],
        endpoint["secret"],
    )


def test_a_null_description_removes_it(client: Any, db: Any) -> None:
    agent = admin()
    endpoint = added(client, agent, description="Backend")

    response = client.patch(
        f"{WEBHOOKS}/{endpoint['id']}", json={"description": None}, headers=agent
    )

    assert response.json()["data"]["description"] is None
    assert rows(db, "webhook_endpoints")[0]["description"] is None


def test_an_empty_patch_is_422(client: Any) -> None:
    agent = admin()
    endpoint = added(client, agent)

    response = client.patch(f"{WEBHOOKS}/{endpoint['id']}", json={}, headers=agent)

    assert_problem(response, 422, "validation_failed")


def test_disabling_records_manual_and_enabling_clears_a_gone_endpoint(client: Any, db: Any) -> None:
    agent = admin()
    endpoint_id = added(client, agent)["id"]
    path = f"{WEBHOOKS}/{endpoint_id}"

    disabled = client.patch(path, json={"enabled": False}, headers=agent).json()["data"]
    with db.begin() as connection:  # the receiver answered 410: the worker disables it
        connection.execute(
            sa.text("UPDATE webhook_endpoints SET disabled_reason = 'gone' WHERE id = :id"),
            {"id": endpoint_id},
        )
    gone = client.get(path, headers=agent).json()["data"]
    again = client.patch(path, json={"enabled": False}, headers=agent).json()["data"]
    enabled = client.patch(path, json={"enabled": True}, headers=agent).json()["data"]

    assert (disabled["enabled"], disabled["disabledReason"]) == (False, "manual")
    assert (gone["enabled"], gone["disabledReason"]) == (False, "gone")
    assert again["disabledReason"] == "gone"  # disabling a disabled one keeps why
    assert (enabled["enabled"], enabled["disabledReason"]) == (True, None)
    [row] = rows(db, "webhook_endpoints")
    assert (row["enabled"], row["disabled_reason"]) == (True, None)


# -- ping, deliveries, retry ------------------------------------------------------------------


def test_a_ping_writes_one_event_and_one_delivery_for_that_endpoint_only(
    client: Any, db: Any
) -> None:
    agent = admin()
    pinged = added(client, agent, events=["support_request.rated"])["id"]
    other = added(client, agent, url="http://127.0.0.1:10/other")["id"]

    delivery = ping(client, agent, pinged)

    assert set(delivery) == DELIVERY_FIELDS
    assert (delivery["eventType"], delivery["status"], delivery["attempts"]) == (PING, "pending", 0)
    assert delivery["nextAttemptAt"] == delivery["createdAt"]
    [event] = rows(db, "webhook_events")
    [stored] = rows(db, "webhook_deliveries")
    assert (event["public_id"], event["type"]) == (delivery["eventId"], PING)
    body = json.loads(event["body"])
    assert (body["type"], body["data"]) == (PING, {"endpointId": pinged})
    assert (stored["id"], stored["endpoint_id"], stored["event_id"]) == (
        delivery["id"],
        pinged,
        event["id"],
    )
    assert other != pinged


def test_deliveries_are_paged_newest_first_and_filtered_by_status(client: Any, db: Any) -> None:
    agent = admin()
    endpoint_id = added(client, agent)["id"]
    sent = [ping(client, agent, endpoint_id) for _ in range(3)]
    set_delivery(db, sent[0]["id"], status="failed", attempts=9, completed_at=datetime(2026, 3, 18))
    path = f"{WEBHOOKS}/{endpoint_id}/deliveries"

    first = client.get(path, params={"limit": 2}, headers=agent).json()
    second = client.get(
        path, params={"limit": 2, "cursor": first["meta"]["nextCursor"]}, headers=agent
    ).json()
    failed = client.get(path, params={"status": "failed"}, headers=agent).json()
    pending = client.get(path, params={"status": "pending"}, headers=agent).json()

    assert [d["id"] for d in first["data"]] == [sent[2]["id"], sent[1]["id"]]
    assert [d["id"] for d in second["data"]] == [sent[0]["id"]]
    assert second["meta"]["nextCursor"] is None
    [gave_up] = failed["data"]
    assert (gave_up["status"], gave_up["attempts"], gave_up["nextAttemptAt"]) == ("failed", 9, None)
    assert gave_up["completedAt"] == "2026-03-18T00:00:00.000Z"
    assert [d["id"] for d in pending["data"]] == [sent[2]["id"], sent[1]["id"]]


def test_a_deliveries_cursor_is_bound_to_its_endpoint_and_status(client: Any) -> None:
    agent = admin()
    endpoint_id = added(client, agent)["id"]
    other_id = added(client, agent)["id"]
    for _ in range(2):
        ping(client, agent, endpoint_id)
    path = f"{WEBHOOKS}/{endpoint_id}/deliveries"
    cursor = client.get(path, params={"limit": 1}, headers=agent).json()["meta"]["nextCursor"]

    answers = [
        client.get(path, params={"cursor": cursor, "status": "pending"}, headers=agent),
        client.get(f"{WEBHOOKS}/{other_id}/deliveries", params={"cursor": cursor}, headers=agent),
        client.get(path, params={"cursor": "bm90LWEtY3Vyc29y"}, headers=agent),
    ]

    for answer in answers:
        assert error_fields(assert_problem(answer, 422, "validation_failed")) == ["cursor"]


def test_a_failed_delivery_retried_is_pending_and_due_now_with_its_attempts_kept(
    client: Any, db: Any
) -> None:
    agent = admin()
    endpoint_id = added(client, agent)["id"]
    delivery = ping(client, agent, endpoint_id)
    set_delivery(
        db,
        delivery["id"],
        status="failed",
        attempts=12,
        last_response_status=503,
        last_error="503 Service Unavailable",
        last_attempt_at=datetime(2026, 3, 18, 9, 0),
        completed_at=datetime(2026, 3, 18, 9, 0),
        next_attempt_at=datetime(2026, 3, 18, 9, 0),
    )

    response = client.post(
        f"{WEBHOOKS}/{endpoint_id}/deliveries/{delivery['id']}/retry", headers=agent
    )

    assert response.status_code == 200, response.text
    retried = response.json()["data"]
    assert (retried["status"], retried["attempts"], retried["completedAt"]) == ("pending", 12, None)
    assert (retried["lastResponseStatus"], retried["lastError"]) == (503, "503 Service Unavailable")
    assert retried["nextAttemptAt"] > "2026-03-18T09:00:00.000Z"
    assert retried["eventId"] == delivery["eventId"]
    [row] = rows(db, "webhook_deliveries")
    assert (row["status"], row["attempts"], row["completed_at"]) == ("pending", 12, None)
    assert row["next_attempt_at"] > datetime(2026, 3, 18, 9, 0)


def test_a_succeeded_delivery_retried_is_409_and_unchanged(client: Any, db: Any) -> None:
    agent = admin()
    endpoint_id = added(client, agent)["id"]
    delivery_id = ping(client, agent, endpoint_id)["id"]
    set_delivery(
        db, delivery_id, status="succeeded", attempts=1, completed_at=datetime(2026, 3, 18)
    )
    before = rows(db, "webhook_deliveries")

    response = client.post(
        f"{WEBHOOKS}/{endpoint_id}/deliveries/{delivery_id}/retry", headers=agent
    )

    assert_problem(response, 409, "already_delivered")
    assert rows(db, "webhook_deliveries") == before


def test_a_delivery_retried_through_another_endpoint_is_404(client: Any, db: Any) -> None:
    agent = admin()
    endpoint_id = added(client, agent)["id"]
    other_id = added(client, agent)["id"]
    delivery_id = ping(client, agent, endpoint_id)["id"]
    before = rows(db, "webhook_deliveries")

    response = client.post(f"{WEBHOOKS}/{other_id}/deliveries/{delivery_id}/retry", headers=agent)

    assert_problem(response, 404, "not_found")
    assert rows(db, "webhook_deliveries") == before


def test_a_retry_wakes_the_workers_on_postgresql(client: Any, database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's workers poll; PostgreSQL's LISTEN on support_webhooks")
    import psycopg

    agent = admin()
    endpoint_id = added(client, agent)["id"]
    delivery_id = ping(client, agent, endpoint_id)["id"]
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN support_webhooks")

        response = client.post(
            f"{WEBHOOKS}/{endpoint_id}/deliveries/{delivery_id}/retry", headers=agent
        )

        assert response.status_code == 200, response.text
        woken = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in woken] == ["support_webhooks"]


def test_removing_an_endpoint_removes_its_deliveries(client: Any, db: Any) -> None:
    agent = admin()
    endpoint_id = added(client, agent)["id"]
    kept_id = added(client, agent)["id"]
    ping(client, agent, endpoint_id)
    ping(client, agent, kept_id)

    response = client.delete(f"{WEBHOOKS}/{endpoint_id}", headers=agent)

    assert response.status_code == 204
    assert response.content == b""
    assert [row["id"] for row in rows(db, "webhook_endpoints")] == [kept_id]
    assert [row["endpoint_id"] for row in rows(db, "webhook_deliveries")] == [kept_id]
    assert_problem(client.get(f"{WEBHOOKS}/{endpoint_id}", headers=agent), 404, "not_found")
    assert_problem(client.delete(f"{WEBHOOKS}/{endpoint_id}", headers=agent), 404, "not_found")


def test_a_refusal_never_quotes_more_than_a_problem_holds(strict: Any, db: Any) -> None:
    agent = admin()
    answers = [
        add(strict, agent, url="https://" + "a" * 300 + ".example.test/"),
        add(strict, agent, url="https://hooks.example.test:" + "9" * 1900 + "/"),
    ]

    for answer in answers:
        problem = assert_problem(answer, 422, "validation_failed")
        assert error_fields(problem) == ["url"]
        assert len(problem["errors"][0]["message"]) <= 500
    assert rows(db, "webhook_endpoints") == []


# -- tokens on every new operation ------------------------------------------------------------

NEW_OPERATIONS = [
    ("POST", "/api/mobile/devices"),
    ("GET", "/api/mobile/devices"),
    ("DELETE", "/api/mobile/devices/dev_" + "A" * 22),
    ("POST", WEBHOOKS),
    ("GET", WEBHOOKS),
    ("GET", f"{WEBHOOKS}/whe_{'A' * 22}"),
    ("PATCH", f"{WEBHOOKS}/whe_{'A' * 22}"),
    ("DELETE", f"{WEBHOOKS}/whe_{'A' * 22}"),
    ("GET", f"{WEBHOOKS}/whe_{'A' * 22}/deliveries"),
    ("POST", f"{WEBHOOKS}/whe_{'A' * 22}/deliveries/1/retry"),
    ("POST", f"{WEBHOOKS}/whe_{'A' * 22}/ping"),
]


@pytest.mark.parametrize(
    "token",
    [None, mint(ttl=-60), mint(secret="another-secret-" + "y" * 40), "not-a-jwt"],
    ids=["missing", "expired", "wrong key", "not a JWT"],
)
def test_every_device_and_webhook_operation_without_a_valid_token_is_401(
    client: Any, db: Any, token: str | None
) -> None:
    headers = {} if token is None else bearer(token)

    for method, path in NEW_OPERATIONS:
        response = client.request(method, path, json={}, headers=headers)

        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
    assert rows(db, "devices") == rows(db, "webhook_endpoints") == []


def test_the_new_operations_are_every_device_and_webhook_operation_of_the_spec() -> None:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    declared = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith(("/api/mobile/devices", WEBHOOKS))
        for method in item
        if method != "parameters"
    }
    names = {
        "dev_" + "A" * 22: "{deviceId}",
        "whe_" + "A" * 22: "{endpointId}",
        "/1/": "/{deliveryId}/",
    }

    def template(path: str) -> str:
        for concrete, name in names.items():
            path = path.replace(concrete, name)
        return path

    covered = {(method, template(path)) for method, path in NEW_OPERATIONS}
    assert covered == declared
