"""supportctl and round 2's device context, tags and queue filters, against a real server
(the fixtures of ``tests/test_cli.py``: one ``supportctl serve`` per backend)."""

from __future__ import annotations

import uuid

import pytest

from tests.test_cli import Cli, cli, new_request, server, someone  # noqa: F401

pytestmark = pytest.mark.slow

DEVICE_OPTIONS = (
    "--platform", "android", "--os-version", "15", "--app-version", "4.2.1",
    "--app-build", "1042", "--device-model", "Pixel 8", "--locale", "de-DE",
    "--time-zone", "Europe/Berlin",
)  # fmt: skip


def _create_from_device(cli: Cli, customer: str, *device: str) -> dict[str, object]:  # noqa: F811
    created = cli.json(
        "--as", customer, "mobile", "create", "--category", "technical",
        "--subject", "App crashes", "--message", "It crashes.", *device,
    )  # fmt: skip
    return dict(created["data"])


def test_mobile_create_sends_the_device_and_admin_show_draws_it(cli: Cli) -> None:  # noqa: F811
    created = _create_from_device(cli, someone(), *DEVICE_OPTIONS)

    assert created["device"] == {
        "platform": "android",
        "osVersion": "15",
        "appVersion": "4.2.1",
        "appBuild": "1042",
        "deviceModel": "Pixel 8",
        "locale": "de-DE",
        "timeZone": "Europe/Berlin",
    }
    shown = cli("--as-admin", "Agent", "admin", "show", str(created["id"]))
    assert shown.exit_code == 0, shown.output
    assert "android 15 · app 4.2.1 (1042) · Pixel 8 · de-DE · Europe/Berlin" in shown.stdout
    assert "Tags" in shown.stdout


def test_mobile_create_without_a_device_sends_none(cli: Cli) -> None:  # noqa: F811
    assert new_request(cli, someone())["device"] is None


def test_device_options_without_a_platform_are_a_usage_error(cli: Cli) -> None:  # noqa: F811
    result = cli(
        "--as", someone(), "mobile", "create", "--category", "technical", "--subject", "S",
        "--message", "M", "--app-version", "4.2.1",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--platform" in result.stderr


def test_admin_tag_adds_and_removes_one_tag(cli: Cli) -> None:  # noqa: F811
    agent = ["--as-admin", f"Agent {uuid.uuid4().hex[:6]}"]
    request_id = str(new_request(cli, someone())["id"])

    assert cli.json(*agent, "admin", "tag", request_id, "add", "bug")["data"]["tags"] == ["bug"]
    added = cli.json(*agent, "admin", "tag", request_id, "add", "crash")
    assert added["data"]["tags"] == ["bug", "crash"]
    again = cli.json(*agent, "admin", "tag", request_id, "add", "bug")
    assert again["data"]["tags"] == ["bug", "crash"]
    removed = cli.json(*agent, "admin", "tag", request_id, "remove", "bug")
    assert removed["data"]["tags"] == ["crash"]

    shown = cli(*agent, "admin", "show", request_id)
    assert "tags: [] → ['bug']" in shown.stdout
    bad = cli(*agent, "admin", "tag", request_id, "add", "Not A Tag")
    assert bad.exit_code == 1
    assert "tags" in bad.stderr


def test_admin_queue_filters_by_platform_app_version_tag_and_rating(cli: Cli) -> None:  # noqa: F811
    agent = ["--as-admin", f"Agent {uuid.uuid4().hex[:6]}"]
    tag = f"t-{uuid.uuid4().hex[:8]}"
    version = f"9.{uuid.uuid4().int % 1000}"
    ios = _create_from_device(cli, someone(), "--platform", "ios", "--app-version", version)
    web = _create_from_device(cli, someone(), "--platform", "web", "--app-version", version)
    cli.json(*agent, "admin", "tag", str(web["id"]), "add", tag)

    def ids(*options: str) -> list[object]:
        return [item["id"] for item in cli.json(*agent, "admin", "queue", *options)["data"]]

    assert ids("--app-version", version) == [web["id"], ios["id"]]
    assert ids("--app-version", version, "--platform", "ios") == [ios["id"]]
    assert ids("--tag", tag) == [web["id"]]
    assert ids("--tag", tag, "--unrated") == [web["id"]]
    assert ids("--tag", tag, "--rated") == []
    assert ids("--tag", tag, "--max-score", "5") == []
    table = cli(*agent, "admin", "queue", "--tag", tag)
    assert str(web["id"]) in table.stdout
