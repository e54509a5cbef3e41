"""``supportctl mobile devices`` and ``supportctl admin webhooks`` against a running
``supportctl serve`` (SQLite, and PostgreSQL when configured), with ``test_cli.py``'s runner.

The server allows loopback and plain http webhook URLs (nothing here is ever delivered:
its embedded worker is off), and seals secrets with a key.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from support_requests.domain.webhooks import EVENT_TYPES, PING
from support_requests.storage.database import sync_url
from support_requests.webhooks.secrets import SEALED
from tests.conftest import BACKENDS
from tests.helpers import cli_server
from tests.servers import Server
from tests.test_cli import Cli, cli, someone  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

WEBHOOK_ENV = {
    "SUPPORT_WEBHOOK_ALLOW_PRIVATE": "1",
    "SUPPORT_WEBHOOK_ALLOW_HTTP": "1",
    "SUPPORT_WEBHOOK_WORKER": "0",
    "SUPPORT_SECRET_KEY": "cli-test-secret-key-" + "s" * 20,
}
HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``supportctl serve`` as in ``test_cli.py``, with the webhook switches above."""
    workdir = tmp_path_factory.mktemp(f"cli-webhooks-{request.param}")
    with cli_server(request.param, workdir, **WEBHOOK_ENV) as running:
        yield running


def agent() -> str:
    return f"Agent {uuid.uuid4().hex[:6]}"


@contextmanager
def server_database(cli: Cli) -> Iterator[sa.Engine]:  # noqa: F811
    """The server's database (its SQLite file in the data directory, or PostgreSQL)."""
    url = cli.server.env.get("SUPPORT_DATABASE_URL") or (
        f"sqlite:///{cli.server.env['SUPPORT_DATA_DIR']}/support.db"
    )
    engine = sa.create_engine(sync_url(url))
    try:
        yield engine
    finally:
        engine.dispose()


def stored(cli: Cli, sql: str, **values: Any) -> list[dict[str, Any]]:  # noqa: F811
    """Rows of the server's database."""
    with server_database(cli) as engine, engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.text(sql), values)]


def add_endpoint(cli: Cli, admin: str, *options: str) -> dict[str, Any]:  # noqa: F811
    return dict(cli.json("--as-admin", admin, "admin", "webhooks", "add", HOOK, *options)["data"])


# -- devices -----------------------------------------------------------------------------------


def test_mobile_devices_register_list_and_remove(cli: Cli) -> None:  # noqa: F811
    customer, token = (
        someone(),
        "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387" + uuid.uuid4().hex,
    )

    registered = cli("--as", customer, "mobile", "devices", "register", "--platform", "ios",
                     "--token", token, "--app-id", "com.example.support", NO_COLOR="1")  # fmt: skip
    listed = cli("--as", customer, "mobile", "devices", "list", NO_COLOR="1")
    data = cli.json("--as", customer, "mobile", "devices", "list")["data"]

    assert registered.exit_code == 0, registered.output
    assert "Device registered successfully" in registered.stdout
    assert listed.exit_code == 0, listed.output
    [device] = data
    assert (device["token"], device["appId"]) == (token, "com.example.support")
    assert device["id"] in listed.stdout
    assert f"{token[:11]}…{token[-8:]}" in listed.stdout
    assert "com.example.support" in listed.stdout

    removed = cli("--as", customer, "mobile", "devices", "remove", device["id"])

    assert removed.exit_code == 0, removed.output
    assert f"Device {device['id']} removed." in removed.stdout
    assert cli.json("--as", customer, "mobile", "devices", "list")["data"] == []
    assert stored(cli, "SELECT id FROM devices WHERE id = :id", id=device["id"]) == []


def test_mobile_devices_register_again_says_the_registration_was_updated(cli: Cli) -> None:  # noqa: F811
    token = "fcm-" + uuid.uuid4().hex
    first, second = someone(), someone()
    cli("--as", first, "mobile", "devices", "register", "--platform", "android", "--token", token)

    moved = cli("--as", second, "mobile", "devices", "register", "--platform", "android",
                "--token", token)  # fmt: skip

    assert moved.exit_code == 0, moved.output
    assert "Device registration updated successfully" in moved.stdout
    assert cli.json("--as", first, "mobile", "devices", "list")["data"] == []


def test_mobile_devices_remove_of_an_unknown_device_exits_1(cli: Cli) -> None:  # noqa: F811
    result = cli("--as", someone(), "mobile", "devices", "remove", "dev_" + "A" * 22)

    assert result.exit_code == 1
    assert "was not found" in result.output


def test_mobile_devices_register_with_an_unknown_platform_prints_the_field(cli: Cli) -> None:  # noqa: F811
    result = cli("--as", someone(), "mobile", "devices", "register", "--platform", "web",
                 "--token", "t")  # fmt: skip

    assert result.exit_code == 1
    assert "platform: must be one of: ios, android" in result.output


# -- webhook endpoints -------------------------------------------------------------------------


def test_admin_webhooks_add_prints_the_secret_once_and_stores_it_sealed(cli: Cli) -> None:  # noqa: F811
    admin = agent()

    added = cli("--as-admin", admin, "admin", "webhooks", "add", HOOK, "--event",
                "notification.push", "--description", "Push relay", NO_COLOR="1")  # fmt: skip

    assert added.exit_code == 0, added.output
    secret = re.search(r"Signing secret: (whsec_[A-Za-z0-9+/]{32})", added.stdout)
    assert secret is not None, added.stdout
    assert "It will not be shown again" in added.stdout
    endpoint_id = re.search(r"Webhook endpoint (whe_[A-Za-z0-9_-]{22})", added.stdout)
    assert endpoint_id is not None, added.stdout
    later = [
        cli("--as-admin", admin, "admin", "webhooks", "list"),
        cli("--as-admin", admin, "admin", "webhooks", "show", endpoint_id[1]),
        cli("--as-admin", admin, "admin", "webhooks", "show", endpoint_id[1], "--json"),
    ]
    for result in later:
        assert result.exit_code == 0, result.output
        assert secret[1] not in result.stdout
    [row] = stored(cli, "SELECT secret, events FROM webhook_endpoints WHERE id = :id",
                   id=endpoint_id[1])  # fmt: skip
    assert row["secret"].startswith(SEALED) and secret[1] not in row["secret"]


def test_admin_webhooks_add_takes_every_event_unless_told(cli: Cli) -> None:  # noqa: F811
    endpoint = add_endpoint(cli, agent())

    assert endpoint["events"] == list(EVENT_TYPES)
    assert endpoint["secret"].startswith("whsec_")


def test_admin_webhooks_add_of_a_refused_url_prints_why_and_exits_1(cli: Cli) -> None:  # noqa: F811
    result = cli("--as-admin", agent(), "admin", "webhooks", "add", "ftp://127.0.0.1/x")

    assert result.exit_code == 1
    assert "url: must be an https URL" in result.output


def test_admin_webhooks_list_and_show(cli: Cli) -> None:  # noqa: F811
    admin = agent()
    endpoint = add_endpoint(cli, admin, "--event", "support_request.rated", "--description", "QA")

    listed = cli("--as-admin", admin, "admin", "webhooks", "list", NO_COLOR="1")
    shown = cli("--as-admin", admin, "admin", "webhooks", "show", endpoint["id"], NO_COLOR="1")
    as_json = cli.json("--as-admin", admin, "admin", "webhooks", "list")

    assert listed.exit_code == 0, listed.output
    assert endpoint["id"] in listed.stdout and HOOK in listed.stdout
    assert shown.exit_code == 0, shown.output
    assert re.search(r"Events\s+support_request\.rated", shown.stdout)
    assert re.search(r"Enabled\s+yes", shown.stdout)
    assert re.search(r"Description\s+QA", shown.stdout)
    assert endpoint["id"] in [e["id"] for e in as_json["data"]]


def test_admin_webhooks_update_disables_enables_and_changes(cli: Cli) -> None:  # noqa: F811
    admin = agent()
    endpoint_id = add_endpoint(cli, admin)["id"]

    disabled = cli("--as-admin", admin, "admin", "webhooks", "update", endpoint_id, "--disable",
                   NO_COLOR="1")  # fmt: skip
    changed = cli.json("--as-admin", admin, "admin", "webhooks", "update", endpoint_id,
                       "--enable", "--event", "support_request.created", "--url",
                       "http://127.0.0.1:10/new", "--description", "")  # fmt: skip
    nothing = cli("--as-admin", admin, "admin", "webhooks", "update", endpoint_id)

    assert disabled.exit_code == 0, disabled.output
    assert re.search(r"Enabled\s+no \(manual\)", disabled.stdout)
    data = changed["data"]
    assert (data["enabled"], data["disabledReason"], data["events"], data["url"]) == (
        True,
        None,
        ["support_request.created"],
        "http://127.0.0.1:10/new",
    )
    assert data["description"] is None
    assert nothing.exit_code == 2
    assert "nothing to change" in nothing.output


def test_admin_webhooks_ping_deliveries_and_retry(cli: Cli) -> None:  # noqa: F811
    admin = agent()
    endpoint_id = add_endpoint(cli, admin)["id"]

    pinged = cli("--as-admin", admin, "admin", "webhooks", "ping", endpoint_id, NO_COLOR="1")
    delivery = cli.json("--as-admin", admin, "admin", "webhooks", "deliveries", endpoint_id)
    [item] = delivery["data"]
    table = cli("--as-admin", admin, "admin", "webhooks", "deliveries", endpoint_id,
                "--status", "pending", NO_COLOR="1")  # fmt: skip
    retried = cli.json("--as-admin", admin, "admin", "webhooks", "retry", endpoint_id,
                       str(item["id"]))  # fmt: skip

    assert pinged.exit_code == 0, pinged.output
    assert "Ping queued" in pinged.stdout and PING in pinged.stdout
    assert (item["eventType"], item["status"]) == (PING, "pending")
    assert table.exit_code == 0, table.output
    assert item["eventId"] in table.stdout and "1 delivery" in table.stdout
    assert retried["data"]["id"] == item["id"]
    assert retried["data"]["status"] == "pending"


def test_admin_webhooks_retry_of_a_succeeded_delivery_exits_1(cli: Cli) -> None:  # noqa: F811
    admin = agent()
    endpoint_id = add_endpoint(cli, admin)["id"]
    delivery_id = cli.json("--as-admin", admin, "admin", "webhooks", "ping", endpoint_id)["data"][
        "id"
    ]
    with server_database(cli) as engine, engine.begin() as connection:  # a worker's 2xx
        connection.execute(
            sa.text("UPDATE webhook_deliveries SET status = 'succeeded' WHERE id = :id"),
            {"id": delivery_id},
        )

    result = cli("--as-admin", admin, "admin", "webhooks", "retry", endpoint_id, str(delivery_id))

    assert result.exit_code == 1
    assert "already_delivered" in result.output


def test_admin_webhooks_remove_asks_first_unless_yes(cli: Cli) -> None:  # noqa: F811
    admin = agent()
    endpoint_id = add_endpoint(cli, admin)["id"]
    cli("--as-admin", admin, "admin", "webhooks", "ping", endpoint_id)

    declined = cli("--as-admin", admin, "admin", "webhooks", "remove", endpoint_id, input="n\n")
    kept = cli.json("--as-admin", admin, "admin", "webhooks", "show", endpoint_id)
    removed = cli("--as-admin", admin, "admin", "webhooks", "remove", endpoint_id, "--yes")

    assert declined.exit_code == 1
    assert kept["data"]["id"] == endpoint_id
    assert removed.exit_code == 0, removed.output
    assert f"Webhook endpoint {endpoint_id} removed." in removed.stdout
    gone = cli("--as-admin", admin, "admin", "webhooks", "show", endpoint_id)
    assert gone.exit_code == 1
    rows = stored(cli, "SELECT id FROM webhook_deliveries WHERE endpoint_id = :id", id=endpoint_id)
    assert rows == []


def test_admin_webhooks_json_output_is_the_apis(cli: Cli) -> None:  # noqa: F811
    admin = agent()
    endpoint_id = add_endpoint(cli, admin)["id"]

    result = cli("--as-admin", admin, "admin", "webhooks", "show", endpoint_id, "--json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["message"] == "Webhook endpoint fetched successfully"
    assert body["data"]["id"] == endpoint_id
