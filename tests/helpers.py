"""Helpers for tests: random principals, minted tokens, request shortcuts."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest

from support_requests.domain.lifecycle import Actor
from support_requests.domain.principal import Principal
from support_requests.storage.database import Database
from support_requests.storage.support_desk import SupportDesk

T = TypeVar("T")

SECRET = "test-secret-" + "x" * 40
MOBILE = "/api/mobile/support-requests"
ADMIN = "/api/admin/support-requests"
BORDERS = re.compile(r"[│╭╮╰╯─]+")


def mint(sub: str | None = None, *, secret: str = SECRET, ttl: int = 3600, **claims: Any) -> str:
    """A signed HS256 token; ``claims`` override or add (``None`` drops a claim)."""
    payload: dict[str, Any] = {"sub": sub or f"customer-{uuid.uuid4().hex[:12]}"}
    payload["exp"] = int(time.time()) + ttl
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def customer(name: str | None = "Alex Customer", **claims: Any) -> dict[str, str]:
    """Headers for a fresh random customer."""
    return bearer(mint(name=name, **claims))


def admin(
    admin_id: str | None = None, name: str | None = "Support Agent", **claims: Any
) -> dict[str, str]:
    """Headers for an admin (a fresh random UUID unless given)."""
    return bearer(mint(admin_id or str(uuid.uuid4()), role="admin", name=name, **claims))


def admin_id_of(headers: dict[str, str]) -> str:
    token = headers["Authorization"].split()[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def create(client: Any, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    """Create a request through the API and return its detail (asserting 201)."""
    body = {"category": "technical", "subject": "App crashes", "message": "It crashes.", **fields}
    response = client.post(MOBILE, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def post_reply(
    client: Any, headers: dict[str, str], request_id: int, body: Any, *, api: str = MOBILE
) -> Any:
    """POST a message to the request through ``api`` (``MOBILE`` or ``ADMIN``): the response."""
    return client.post(f"{api}/{request_id}/messages", json={"body": body}, headers=headers)


def reply(
    client: Any,
    headers: dict[str, str],
    request_id: int,
    body: str = "More detail.",
    *,
    api: str = MOBILE,
) -> dict[str, Any]:
    """Reply through ``api`` and return the request's detail (asserting 201)."""
    response = post_reply(client, headers, request_id, body, api=api)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def customer_principal(name: str | None = "Alex") -> Principal:
    """A fresh random customer, as the services see one (no token)."""
    return Principal(sub=f"customer-{uuid.uuid4().hex}", role=Actor.CUSTOMER, name=name)


def admin_principal() -> Principal:
    """A fresh random admin, as the services see one (no token)."""
    return Principal(sub=str(uuid.uuid4()), role=Actor.ADMIN, name="Agent")


def with_desk(database_url: str, work: Callable[[SupportDesk], Awaitable[T]]) -> T:
    """Run ``work`` against a desk on a fresh engine, disposed afterwards."""

    async def run() -> T:
        database = Database(database_url)
        try:
            await database.create_schema()
            return await work(SupportDesk(database))
        finally:
            await database.dispose()

    return asyncio.run(run())


def on_database(
    database_url: str, scenario: Callable[[Database], Awaitable[None]], **options: Any
) -> None:
    """Run ``scenario`` with a ``Database`` (``options``) on the test's database, disposed
    afterwards."""

    async def run() -> None:
        database = Database(database_url, **options)
        try:
            await scenario(database)
        finally:
            await database.dispose()

    asyncio.run(run())


def usage_refused(script: Path, *arguments: str) -> str:
    """Run a bench script that must refuse ``arguments`` (exit status 2, argparse's); its
    stderr."""
    done = subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    return done.stderr


# -- admin API shortcuts and stored-state readers (issue 2/6) -------------------

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def known_admin(client: Any, name: str | None = "Support Agent", **claims: Any) -> dict[str, str]:
    """Headers for a fresh admin the service has seen (it called ``GET /api/admin/admins``)."""
    headers = admin(name=name, **claims)
    response = client.get("/api/admin/admins", headers=headers)
    assert response.status_code == 200, response.text
    return headers


def move_to(client: Any, headers: dict[str, str], request_id: int, status: str) -> dict[str, Any]:
    """PATCH a request to ``status`` as the admin ``headers`` (with a note for resolved)."""
    body: dict[str, Any] = {"status": status}
    if status == "resolved":
        body["resolutionNote"] = "Fixed in version 4.2.1."
    response = client.patch(f"{ADMIN}/{request_id}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == status
    return dict(response.json()["data"])


def stored_request(db: Any, request_id: int) -> dict[str, Any]:
    """The request's row as stored, as a dict."""
    from support_requests.storage.models import Base

    table = Base.metadata.tables["support_requests"]
    with db.connect() as connection:
        row = connection.execute(table.select().where(table.c.id == request_id)).one()
    return dict(row._mapping)


def stored_rows(db: Any, table_name: str, request_id: int) -> list[dict[str, Any]]:
    """Rows of ``messages`` or ``request_events`` for a request, in id order."""
    from support_requests.storage.models import Base

    assert table_name in ("messages", "request_events")
    table = Base.metadata.tables[table_name]
    with db.connect() as connection:
        rows = connection.execute(
            table.select().where(table.c.request_id == request_id).order_by(table.c.id)
        )
        return [dict(row._mapping) for row in rows]


def snapshot(db: Any, request_id: int) -> tuple[Any, ...]:
    """Everything stored about a request (row, messages, events): a refused call leaves it."""
    return (
        stored_request(db, request_id),
        stored_rows(db, "messages", request_id),
        stored_rows(db, "request_events", request_id),
    )


# -- problem and timestamp assertions (issue 1/6) --------------------------------

PROBLEM_FIELDS = ("type", "title", "status", "detail", "message", "code")
# A problem's title is its status's reason phrase as RFC 9110 (section 15) writes it; 429 is
# RFC 6585's. Written out here, apart from the service's own table, so that one checks the other.
RFC_9110_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
TIMESTAMP_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z"


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem response with ``status`` and ``code``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = dict(response.json())
    assert set(PROBLEM_FIELDS) <= set(body) <= problem_properties(), body
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["type"], str) and body["type"]
    assert body["title"] == RFC_9110_TITLES[status], body
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["message"] == body["detail"]
    assert ("errors" in body) == (status == 422), body
    return body


def error_fields(body: dict[str, Any]) -> list[str]:
    """The ``field`` of each entry of a 422 problem's ``errors``, in order."""
    return [entry["field"] for entry in body["errors"]]


_problem_properties: frozenset[str] = frozenset()


def problem_properties() -> frozenset[str]:
    """Every member the spec's ``Problem`` schema allows (the spec is read once)."""
    global _problem_properties
    if not _problem_properties:
        import yaml

        from support_requests.openapi import SPEC_PATH

        spec = yaml.load(
            SPEC_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
        _problem_properties = frozenset(spec["components"]["schemas"]["Problem"]["properties"])
    return _problem_properties


def _without_id(content: bytes, request_id: int) -> bytes:
    """A response body with the request id, as a whole number, replaced by ``{id}``."""
    return re.sub(rb"(?<![0-9A-Za-z])%d(?![0-9A-Za-z])" % request_id, b"{id}", content)


def assert_same_not_found(foreign: Any, foreign_id: int, missing: Any, missing_id: int) -> None:
    """Another customer's request answered exactly as a missing one: the same 404, byte for
    byte but for the id, with the same headers."""
    assert_problem(foreign, 404, "not_found")
    assert_problem(missing, 404, "not_found")
    normalized = _without_id(foreign.content, foreign_id)
    assert b"{id}" in normalized
    assert normalized == _without_id(missing.content, missing_id)
    assert {k: v for k, v in foreign.headers.items() if k != "content-length"} == {
        k: v for k, v in missing.headers.items() if k != "content-length"
    }


@contextmanager
def refusing_message_inserts(db: Any) -> Iterator[None]:
    """The database itself refuses every insert into ``messages`` (a trigger), mid-write."""
    with refusing_inserts(db, "messages"):
        yield


@contextmanager
def refusing_inserts(db: Any, table: str) -> Iterator[None]:
    """The database itself refuses every insert into ``table`` (a trigger), mid-write."""
    if db.dialect.name == "sqlite":
        create = [
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ]
        drop = [f"DROP TRIGGER refuse_{table}"]
    else:
        create = [
            f"CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION refuse_{table}()",
        ]
        drop = [f"DROP TRIGGER refuse_{table} ON {table}", f"DROP FUNCTION refuse_{table}()"]
    with db.begin() as connection:
        for statement in create:
            connection.exec_driver_sql(statement)
    try:
        yield
    finally:
        with db.begin() as connection:
            for statement in drop:
                connection.exec_driver_sql(statement)


def require_tool(present: bool, tool: str, install: str) -> None:
    """Skip when ``tool`` is missing, except under CI (which installs every tool): fail there."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{tool} is not installed: CI must {install}")
    pytest.skip(f"{tool} is not installed: {install}")


def run_ok(
    *command: str | Path, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``command`` run to its end (5 minutes at most); its exit code must be 0."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def flat(text: str) -> str:
    """Command output as one line: panel borders dropped, whitespace runs made one space."""
    return " ".join(BORDERS.sub(" ", text).split())


def signed_delivery(
    secret: str, body: str, *, webhook_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers the service sends with ``body``, signed with ``secret``
    by the ``standardwebhooks`` library (``at``: the timestamp, now by default)."""
    from standardwebhooks import Webhook

    moment = at or datetime.now(UTC)
    message_id = webhook_id or "evt_" + uuid.uuid4().hex
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, moment, body),
        "content-type": "application/json",
    }


# -- webhooks: host names answered without DNS (issue 14) ---------------------------------

PUBLIC_TEST_ADDRESS = "93.184.216.34"


async def loopback_lookup(host: str, port: int) -> list[str]:
    """A resolver for tests that sends no DNS query: literal addresses answer themselves,
    ``localhost`` is loopback, names ending in ``.example.test`` are one public address,
    and every other name does not resolve (``OSError``), as ``addresses.Lookup`` says."""
    name = host.rstrip(".").lower()
    if name == "localhost":
        return ["127.0.0.1", "::1"]
    if name.endswith(".example.test"):
        return [PUBLIC_TEST_ADDRESS]
    try:
        import ipaddress

        return [str(ipaddress.ip_address(name.strip("[]")))]
    except ValueError:
        raise OSError("tests send no DNS query") from None


@contextmanager
def webhook_client(settings: Any, **changes: Any) -> Iterator[Any]:
    """A test client of an app on ``settings`` with ``changes`` (``dataclasses.replace``: the
    webhook switches, a secret key) whose webhook hosts resolve through ``loopback_lookup``."""
    import dataclasses

    from support_requests.handlers.app import create_app

    app = create_app(dataclasses.replace(settings, **changes), lookup=loopback_lookup)
    with app.test_client() as test_client:
        yield test_client


@contextmanager
def cli_server(backend: str, workdir: Path, **env: str) -> Iterator[Any]:
    """``supportctl serve`` in zero-configuration mode (the development secret in
    ``workdir/data``) on ``backend``: ``sqlite``, or ``postgresql`` at SUPPORT_TEST_PG_URL,
    emptied and set up by ``db init``; ``env`` adds to its environment."""
    from tests.conftest import PG_URL, reset_pg
    from tests.servers import SUPPORTCTL, clean_environment, empty_database, supportctl_server

    environment = clean_environment(SUPPORT_DATA_DIR=str(workdir / "data"), **env)
    if backend == "postgresql":
        assert PG_URL is not None
        reset_pg(PG_URL)
        empty_database(PG_URL)
        environment["SUPPORT_DATABASE_URL"] = PG_URL
        subprocess.run(
            [SUPPORTCTL, "db", "init"],
            env=environment,
            check=True,
            capture_output=True,
            timeout=60,
        )
    with supportctl_server(environment, workdir) as running:
        yield running


# -- webhooks (issue 14) ----------------------------------------------------------


def add_endpoint_row(
    db: Any,
    events: Sequence[str] | None = None,
    *,
    enabled: bool = True,
    url: str = "http://127.0.0.1:9/hooks",
) -> str:
    """A webhook endpoint written straight into ``webhook_endpoints`` (taking ``events``,
    every type when None), as the admin API would store it; its id."""
    from support_requests.domain.webhooks import EVENT_TYPES
    from support_requests.storage.models import Base
    from support_requests.webhooks.secrets import new_secret

    endpoint_id = "we_" + uuid.uuid4().hex[:24]
    now = datetime.now(UTC).replace(tzinfo=None)
    with db.begin() as connection:
        connection.execute(
            Base.metadata.tables["webhook_endpoints"].insert(),
            {
                "id": endpoint_id,
                "url": url,
                "description": "added by a test",
                "events": list(EVENT_TYPES if events is None else events),
                "secret": new_secret(),
                "enabled": enabled,
                "disabled_reason": None if enabled else "disabled by a test",
                "created_by": str(uuid.uuid4()),
                "created_at": now,
                "updated_at": now,
            },
        )
    return endpoint_id


def pending_delivery(database_url: str, secret: str, *, minutes_ago: int) -> None:
    """An enabled endpoint taking ``support_request.created`` (signing with ``secret``, as
    stored) and one event for it, both written ``minutes_ago``; no worker delivers it."""
    import asyncio
    from datetime import timedelta

    from sqlalchemy import insert

    from support_requests.domain.clock import now_ms
    from support_requests.storage.database import Database
    from support_requests.storage.outbox import Event, endpoints_table, enqueue

    async def write() -> None:
        database = Database(database_url)
        at = now_ms() - timedelta(minutes=minutes_ago)
        try:
            async with database.writing() as connection:
                await connection.execute(
                    insert(endpoints_table),
                    {
                        "id": "ep_pending",
                        "url": "https://hooks.example.test/support",
                        "description": None,
                        "events": ["support_request.created"],
                        "secret": secret,
                        "enabled": True,
                        "disabled_reason": None,
                        "created_by": "ops",
                        "created_at": at,
                        "updated_at": at,
                    },
                )
                event = Event(
                    "support_request.created", {"requestId": 1, "customerId": "c"}, 1, "c"
                )
                assert await enqueue(connection, [event], at) == 1
        finally:
            await database.dispose()

    asyncio.run(write())
