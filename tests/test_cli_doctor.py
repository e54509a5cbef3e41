"""supportctl doctor: one row per check, what to do for each failure, exit 1 on any."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from support_requests.storage import schema
from support_requests.webhooks.secrets import SecretBox, new_secret
from tests.conftest import REDIS_URL
from tests.helpers import pending_delivery
from tests.servers import free_port, migrated_database

SECRET = "doctor-test-secret-" + "s" * 40
KEY = "doctor-secret-key-" + "k" * 30


def checks(result: Any) -> dict[str, dict[str, str]]:
    return {row["check"]: row for row in json.loads(result.output)}


@pytest.fixture
def migrated(database_url: str) -> str:
    migrated_database(database_url)
    return database_url


def test_doctor_passes_on_a_healthy_configuration(run, migrated):
    result = run("doctor", "--json", SUPPORT_DATABASE_URL=migrated, SUPPORT_JWT_SECRET=SECRET)
    assert result.exit_code == 0, result.output
    rows = checks(result)
    assert {name: row["status"] for name, row in rows.items()} == {
        "configuration": "ok",
        "token keys": "ok",
        "database": "ok",
        "schema": "ok",
        "webhook outbox": "ok",
        "webhook secrets": "ok",
        "redis": "ok",
        "attachment store": "ok",
        "metrics": "warn",
    }
    assert rows["schema"]["detail"] == f"at revision {schema.head()}"


def test_doctor_draws_a_table_by_default(run, migrated):
    result = run("doctor", SUPPORT_DATABASE_URL=migrated, SUPPORT_JWT_SECRET=SECRET)
    assert result.exit_code == 0
    for name in ("configuration", "database", "schema", "redis", "what to do"):
        assert name in result.output


def test_a_development_secret_is_a_warning_not_a_failure(run, migrated):
    result = run("doctor", "--json", SUPPORT_DATABASE_URL=migrated)
    assert result.exit_code == 0
    assert checks(result)["token keys"]["status"] == "warn"


def test_a_bad_configuration_fails_with_what_to_change(run):
    result = run("doctor", "--json", SUPPORT_JWT_SECRET="short")
    assert result.exit_code == 1
    (row,) = json.loads(result.output)
    assert row["check"] == "configuration" and row["status"] == "fail"
    assert "SUPPORT_JWT_SECRET" in row["detail"]


def test_an_unreachable_database_fails_with_what_to_check(run):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    result = run("doctor", "--json", SUPPORT_DATABASE_URL=dead, SUPPORT_JWT_SECRET=SECRET)
    assert result.exit_code == 1
    row = checks(result)["database"]
    assert row["status"] == "fail"
    assert "SUPPORT_DATABASE_URL" in row["fix"]
    assert "schema" not in checks(result)


def test_an_out_of_date_schema_fails_and_says_to_upgrade(run, migrated):
    schema.downgrade(migrated, "0003")
    result = run("doctor", "--json", SUPPORT_DATABASE_URL=migrated, SUPPORT_JWT_SECRET=SECRET)
    assert result.exit_code == 1
    row = checks(result)["schema"]
    assert row["status"] == "fail"
    assert row["detail"] == f"at 0003, this version needs {schema.head()}"
    assert "supportctl db upgrade" in row["fix"]


def test_redis_is_checked_when_configured(run, migrated):
    alive = run(
        "doctor",
        "--json",
        SUPPORT_DATABASE_URL=migrated,
        SUPPORT_JWT_SECRET=SECRET,
        SUPPORT_REDIS_URL=REDIS_URL,
    )
    assert checks(alive)["redis"]["status"] == "ok"
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = run(
        "doctor",
        "--json",
        SUPPORT_DATABASE_URL=migrated,
        SUPPORT_JWT_SECRET=SECRET,
        SUPPORT_REDIS_URL=dead,
    )
    assert result.exit_code == 1
    row = checks(result)["redis"]
    assert row["status"] == "fail" and dead in row["detail"]
    assert "SUPPORT_REDIS_URL" in row["fix"]


def test_an_attachment_directory_that_cannot_be_written_fails(run, migrated, tmp_path):
    missing = tmp_path / "no-such-dir"
    result = run(
        "doctor",
        "--json",
        SUPPORT_DATABASE_URL=migrated,
        SUPPORT_JWT_SECRET=SECRET,
        SUPPORT_ATTACHMENT_DIR=str(missing),
    )
    assert result.exit_code == 1
    assert checks(result)["attachment store"]["status"] == "fail"
    missing.mkdir()
    result = run(
        "doctor",
        "--json",
        SUPPORT_DATABASE_URL=migrated,
        SUPPORT_JWT_SECRET=SECRET,
        SUPPORT_ATTACHMENT_DIR=str(missing),
    )
    assert checks(result)["attachment store"]["status"] == "ok"
    assert list(missing.iterdir()) == []  # the probe file is gone


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A JWKS endpoint on 127.0.0.1 serving whatever the test puts in ``document``."""
    document: dict[str, Any] = {}

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(document).encode()
            self.send_response(200 if document else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", document
    finally:
        server.shutdown()
        server.server_close()


def test_the_jwks_endpoint_must_publish_usable_keys(run, migrated, jwks_server):
    url, document = jwks_server
    result = run("doctor", "--json", SUPPORT_DATABASE_URL=migrated, SUPPORT_JWKS_URL=url)
    assert result.exit_code == 1
    assert checks(result)["JWKS endpoint"]["status"] == "fail"
    document["keys"] = [{"kty": "EC", "kid": "k1", "crv": "P-256", "x": "AA", "y": "AA"}]
    result = run("doctor", "--json", SUPPORT_DATABASE_URL=migrated, SUPPORT_JWKS_URL=url)
    assert result.exit_code == 0, result.output
    assert checks(result)["JWKS endpoint"]["detail"] == f"1 key(s) at {url}"


def test_deliveries_waiting_for_a_worker_fail_with_what_to_start(run, migrated):
    pending_delivery(migrated, new_secret(), minutes_ago=5)
    result = run(
        "doctor",
        "--json",
        SUPPORT_DATABASE_URL=migrated,
        SUPPORT_JWT_SECRET=SECRET,
        SUPPORT_WEBHOOK_WORKER="0",
    )
    assert result.exit_code == 1
    row = checks(result)["webhook outbox"]
    assert row["status"] == "fail"
    assert row["detail"].startswith("1 pending")
    assert "supportctl worker" in row["fix"]


def test_sealed_secrets_need_the_key_they_were_sealed_with(run, migrated):
    sealed = SecretBox(KEY.encode()).seal(new_secret())
    pending_delivery(migrated, sealed, minutes_ago=0)
    base: dict[str, str] = {"SUPPORT_DATABASE_URL": migrated, "SUPPORT_JWT_SECRET": SECRET}
    without = run("doctor", "--json", **base)
    assert without.exit_code == 1
    assert checks(without)["webhook secrets"]["status"] == "fail"
    assert "SUPPORT_SECRET_KEY" in checks(without)["webhook secrets"]["fix"]
    wrong = run("doctor", "--json", **base, SUPPORT_SECRET_KEY="another-key-" + "x" * 30)
    assert checks(wrong)["webhook secrets"]["status"] == "fail"
    right = run("doctor", "--json", **base, SUPPORT_SECRET_KEY=KEY)
    assert checks(right)["webhook secrets"]["status"] == "ok"


def test_doctor_is_listed_among_the_operator_commands(run) -> None:
    result = run("--help")
    assert "doctor" in result.output
