"""supportctl against a real server: one ``supportctl serve`` process per backend.

The server runs in zero-configuration mode (the development secret in its data
directory), so ``--as`` / ``--as-admin`` mint with the very key the server
uses. Most commands run in-process through Typer's runner; the QA scenario runs
the installed ``supportctl`` command as a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from support_requests.cli.main import app
from support_requests.cli.tokens import admin_id_for
from tests.conftest import BACKENDS
from tests.helpers import cli_server, flat, mint
from tests.servers import (
    SUPPORTCTL,
    Server,
    free_port,
)

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``supportctl serve`` on SQLite (zero-config default) or PostgreSQL set up by ``db init``."""
    with cli_server(request.param, tmp_path_factory.mktemp(f"cli-{request.param}")) as running:
        yield running


@dataclass
class Cli:
    """Runs supportctl against the module's server, with a private profile file."""

    server: Server
    config_file: Path
    runner: CliRunner = field(default_factory=CliRunner)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **self.server.env,
            "SUPPORT_API_URL": self.server.url,
            "SUPPORT_CONFIG_FILE": str(self.config_file),
            **extra,
        }

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        """In-process; fails the test on any exception other than a clean exit."""
        result = self.runner.invoke(app, list(args), input=input, env=self.env(**env))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert "Traceback" not in result.output
        return result

    def process(self, *args: str, input: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        """The installed ``supportctl`` command."""
        completed = subprocess.run(
            [SUPPORTCTL, *args],
            env=self.env(**env),
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in completed.stderr
        return completed

    def json(self, *args: str, **env: str) -> Any:
        result = self(*args, "--json", **env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def secret(self) -> str:
        return (Path(self.server.env["SUPPORT_DATA_DIR"]) / "dev-jwt-secret").read_text().strip()


@pytest.fixture
def cli(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name in list(os.environ):
        if name.startswith("SUPPORT_") or name in ("NO_COLOR", "FORCE_COLOR"):
            monkeypatch.delenv(name)
    return Cli(server, tmp_path / "config" / "supportctl.json")


def someone() -> str:
    return f"Customer {uuid.uuid4().hex[:8]}"


def new_request(cli: Cli, customer: str, **fields: str) -> dict[str, Any]:
    values = {"category": "technical", "subject": "App crashes", "message": "It crashes.", **fields}
    options = [part for name, value in values.items() for part in (f"--{name}", value)]
    return dict(cli.json("--as", customer, "mobile", "create", *options)["data"])


# -- the QA scenario, with the installed command ------------------------------------------


def test_qa_scenario_runs_the_whole_lifecycle_with_the_installed_command(cli: Cli) -> None:
    customer, agent = someone(), f"Agent {uuid.uuid4().hex[:6]}"
    # Tokens from `supportctl token mint`, signed with the key the server uses.
    minted = cli.process("token", "mint", "--sub", customer, "--name", customer)
    agent_token = cli.process("token", "mint", "--admin", "--name", agent).stdout.strip()
    assert minted.returncode == 0, minted.stderr
    as_customer = {"SUPPORT_TOKEN": minted.stdout.strip()}
    as_agent = {"SUPPORT_TOKEN": agent_token}

    created = cli.process(
        "mobile", "create", "--category", "payment", "--subject", "Charged twice",
        "--message", "My card was charged twice.", "--json", **as_customer,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    request_id = json.loads(created.stdout)["data"]["id"]

    listed = cli.process("mobile", "list", **as_customer)
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"\b{request_id}\b.*open.*payment.*Charged twice", listed.stdout)

    shown = cli.process("mobile", "show", str(request_id), **as_customer)
    assert shown.returncode == 0, shown.stderr
    assert "My card was charged twice." in shown.stdout
    assert f"You ({customer})" in shown.stdout
    assert re.search(r"Allowed actions\s+reply", shown.stdout)

    replied = cli.process("mobile", "reply", str(request_id), "--body", "Any news?", **as_customer)
    assert replied.returncode == 0, replied.stderr
    assert "Any news?" in replied.stdout

    queue = cli.process("admin", "queue", "--unassigned", "--all", "--json", **as_agent)
    assert request_id in [item["id"] for item in json.loads(queue.stdout)["data"]]

    assigned = cli.process("admin", "assign", str(request_id), "--to", "me", **as_agent)
    assert assigned.returncode == 0, assigned.stderr
    assert f"{agent} ({admin_id_for(agent)})" in assigned.stdout

    answered = cli.process(
        "admin", "reply", str(request_id), "--body", "The duplicate is refunded.", **as_agent
    )
    assert answered.returncode == 0, answered.stderr
    assert "in progress" in answered.stdout and f"{agent} (staff), you" in answered.stdout

    resolved = cli.process(
        "admin", "resolve", str(request_id), "--note", "Refunded the duplicate.", **as_agent
    )
    assert resolved.returncode == 0, resolved.stderr
    assert re.search(r"Status\s+resolved", resolved.stdout)
    assert "Refunded the duplicate." in resolved.stdout

    closed = cli.process("admin", "close", str(request_id), **as_agent)
    assert closed.returncode == 0, closed.stderr
    assert re.search(r"Status\s+closed", closed.stdout)
    assert "none: the request is closed" in closed.stdout

    refused = cli.process("mobile", "reply", str(request_id), "--body", "Thanks!", **as_customer)
    assert refused.returncode == 1
    assert refused.stdout == ""
    error = flat(refused.stderr)
    assert f"Support request {request_id} is closed and takes no more replies." in error
    assert "(400 request_closed)" in error


# -- --json: exactly the API's JSON ----------------------------------------------------------


def test_json_output_is_exactly_the_api_response_body(cli: Cli) -> None:
    customer = someone()
    token = mint(customer, secret=cli.secret(), name=customer)
    created = cli("--token", token, "mobile", "create", "--category", "account",
                  "--subject", "Locked out", "--message", "Help", "--json")  # fmt: skip
    assert created.exit_code == 0, created.output
    request_id = json.loads(created.stdout)["data"]["id"]

    shown = cli("--token", token, "mobile", "show", str(request_id), "--json")
    direct = httpx.get(
        f"{cli.server.url}/api/mobile/support-requests/{request_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert shown.stdout == direct.text + "\n"
    body = json.loads(shown.stdout)
    assert body["message"] == "Support request fetched successfully"
    assert body["data"]["subject"] == "Locked out"
    assert [m["body"] for m in body["data"]["messages"]] == ["Help"]


def test_list_all_follows_every_cursor_and_json_joins_the_pages(cli: Cli) -> None:
    customer = someone()
    ids = [new_request(cli, customer, subject=f"Problem {n}")["id"] for n in range(3)]

    first = cli.json("--as", customer, "mobile", "list", "--limit", "2")
    assert [item["id"] for item in first["data"]] == ids[::-1][:2]
    assert first["meta"]["nextCursor"]

    everything = cli.json("--as", customer, "mobile", "list", "--limit", "2", "--all")
    assert [item["id"] for item in everything["data"]] == ids[::-1]
    assert everything["meta"] == {"nextCursor": None}

    rest = cli.json("--as", customer, "mobile", "list", "--cursor", first["meta"]["nextCursor"])
    assert [item["id"] for item in rest["data"]] == ids[:1]

    people = cli("--as", customer, "mobile", "list", "--limit", "2")
    assert f"--cursor {first['meta']['nextCursor']}" in people.stdout
    assert "Problem 0" not in people.stdout
    assert "Problem 0" in cli("--as", customer, "mobile", "list", "--limit", "2", "--all").stdout


def test_admin_queue_filters_by_status_category_assignee_and_unassigned(cli: Cli) -> None:
    customer, agent = someone(), f"Agent {uuid.uuid4().hex[:6]}"
    mine = new_request(cli, customer, category="other")["id"]
    waiting = new_request(cli, customer, category="other")["id"]
    assert cli("--as-admin", agent, "admin", "reply", str(mine), "--body", "On it").exit_code == 0

    mine_only = cli.json("--as-admin", agent, "admin", "queue", "--mine", "--all")["data"]
    assert [item["id"] for item in mine_only] == [mine]
    assert mine_only[0]["assignedAdminId"] == admin_id_for(agent)

    unassigned = cli.json("--as-admin", agent, "admin", "queue", "--unassigned", "--all")["data"]
    assert waiting in [item["id"] for item in unassigned]
    assert all(item["assignedAdminId"] is None for item in unassigned)

    in_progress = cli.json(
        "--as-admin", agent, "admin", "queue", "--status", "in_progress", "--category", "other",
        "--sort", "-updatedAt", "--all",
    )["data"]  # fmt: skip
    assert mine in [item["id"] for item in in_progress]
    assert {(item["status"], item["category"]) for item in in_progress} == {
        ("in_progress", "other")
    }

    table = cli("--as-admin", agent, "admin", "queue", "--mine")
    assert re.search(
        rf"\b{mine}\b.*in progress.*other.*App crashes.*{customer}.*{agent}", table.stdout
    )


def test_admin_assign_takes_a_name_me_or_none(cli: Cli) -> None:
    request_id = new_request(cli, someone())["id"]
    colleague = f"Colleague {uuid.uuid4().hex[:6]}"
    assert cli("--as-admin", colleague, "admin", "admins").exit_code == 0  # now the service knows
    lead = ["--as-admin", f"Lead {uuid.uuid4().hex[:6]}"]

    by_name = cli.json(*lead, "admin", "assign", str(request_id), "--to", colleague.upper())
    assert by_name["data"]["assignedAdminId"] == admin_id_for(colleague)
    nobody = cli.json(*lead, "admin", "assign", str(request_id), "--to", "none")
    assert nobody["data"]["assignedAdminId"] is None

    unknown = cli(*lead, "admin", "assign", str(request_id), "--to", "Nobody Known")
    assert unknown.exit_code == 2
    assert "is no admin's name" in unknown.stderr


def test_admin_show_has_customer_assignee_and_history(cli: Cli) -> None:
    customer, agent = someone(), f"Agent {uuid.uuid4().hex[:6]}"
    request_id = new_request(cli, customer)["id"]
    cli("--as-admin", agent, "admin", "reply", str(request_id), "--body", "Looking into it")

    shown = cli("--as-admin", agent, "admin", "show", str(request_id))
    assert shown.exit_code == 0, shown.output
    assert re.search(rf"Customer\s+{customer}\s", shown.stdout)
    assert f"{agent} ({admin_id_for(agent)})" in shown.stdout
    assert "History" in shown.stdout
    assert "open → in_progress" in shown.stdout
    assert "assignedAdminId: - → " + agent in shown.stdout

    events = cli.json("--as-admin", agent, "admin", "events", str(request_id))["data"]
    assert [event["type"] for event in events][:2] == ["created", "admin_replied"]


def test_message_comes_from_stdin_or_a_file(cli: Cli, tmp_path: Path) -> None:
    customer = someone()
    piped = cli("--as", customer, "mobile", "create", "--category", "other", "--subject",
                "From stdin", "--json", input="Typed into a pipe.\n")  # fmt: skip
    assert json.loads(piped.stdout)["data"]["messages"][0]["body"] == "Typed into a pipe."

    note = tmp_path / "reply.txt"
    note.write_text("From a file, line one.\nLine two.")
    request_id = json.loads(piped.stdout)["data"]["id"]
    replied = cli.json(
        "--as", customer, "mobile", "reply", str(request_id), "--body-file", str(note)
    )
    assert replied["data"]["messages"][-1]["body"] == "From a file, line one.\nLine two."


# -- people's output --------------------------------------------------------------------------


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process in a UTC+05:30 zone named XYZ (a POSIX TZ rule: no tz database needed)."""
    monkeypatch.setenv("TZ", "XYZ-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_show_prints_times_in_local_time(cli: Cli, india_time: None) -> None:
    customer = someone()
    detail = new_request(cli, customer)
    created = datetime.strptime(detail["createdAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
    shown = cli("--as", customer, "mobile", "show", str(detail["id"]))
    assert shown.exit_code == 0, shown.output
    local = (created + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d %H:%M XYZ")
    assert re.search(rf"Created\s+{local}", shown.stdout)
    assert re.search(rf"{local}", shown.stdout.split("Allowed actions")[1])  # the message's time
    assert "UTC" not in shown.stdout


def test_customer_and_staff_messages_are_distinct_without_colour(cli: Cli) -> None:
    customer, agent = someone(), f"Agent {uuid.uuid4().hex[:6]}"
    request_id = new_request(cli, customer, message="Customer words")["id"]
    cli("--as-admin", agent, "admin", "reply", str(request_id), "--body", "Staff words")

    shown = cli("--as", customer, "mobile", "show", str(request_id), NO_COLOR="1").stdout
    lines = shown.splitlines()
    customer_line = next(line for line in lines if "Customer words" in line)
    staff_line = next(line for line in lines if "Staff words" in line)
    assert customer_line.startswith("│")  # a light box on the left
    assert staff_line.rstrip().endswith("┃") and not staff_line.startswith("┃")  # heavy, right
    assert f"You ({customer})" in shown and f"{agent} (staff)" in shown


def test_mobile_list_shows_unread_counts_and_show_marks_them_read(cli: Cli) -> None:
    customer, agent = someone(), f"Agent {uuid.uuid4().hex[:6]}"
    request_id = str(new_request(cli, customer, message="Customer words")["id"])
    for words in ("First staff words", "Second staff words"):
        cli("--as-admin", agent, "admin", "reply", request_id, "--body", words)

    listed = cli("--as", customer, "mobile", "list", NO_COLOR="1").stdout
    assert re.search(r"Unread", listed)
    assert re.search(rf"\b{request_id}\b.*assigned\s+2\s", listed)
    assert "2 unread messages in 1 request." in cli("--as", customer, "mobile", "unread").stdout
    assert cli.json("--as", customer, "mobile", "unread")["data"] == {
        "unreadCount": 2,
        "requestsWithUnread": 1,
    }

    # --no-read: the divider, and the messages stay unread.
    peek = cli("--as", customer, "mobile", "show", request_id, "--no-read", NO_COLOR="1").stdout
    assert re.search(r"─+ new ─+", peek)
    assert "2 unread messages" in cli("--as", customer, "mobile", "unread").stdout

    shown = cli("--as", customer, "mobile", "show", request_id, NO_COLOR="1").stdout
    divider = re.search(r"─+ new ─+", shown)
    assert divider is not None
    assert shown.index("Customer words") < divider.start() < shown.index("First staff words")
    assert "No unread messages." in cli("--as", customer, "mobile", "unread").stdout
    detail = cli.json("--as", customer, "mobile", "show", request_id)["data"]
    assert (detail["unreadCount"], detail["lastReadMessageId"]) == (0, detail["messages"][-1]["id"])
    again = cli("--as", customer, "mobile", "show", request_id, NO_COLOR="1").stdout
    assert re.search(r"─+ new ─+", again) is None
    staff_view = cli("--as-admin", agent, "admin", "show", request_id, NO_COLOR="1").stdout
    assert re.search(
        rf"Customer has read\s+up to message {detail['messages'][-1]['id']}", staff_view
    )


def test_colour_only_on_a_terminal_and_never_with_no_color(cli: Cli) -> None:
    customer = someone()
    request_id = str(new_request(cli, customer)["id"])
    show = ("--as", customer, "mobile", "show", request_id)

    assert ANSI.search(cli(*show, FORCE_COLOR="1").stdout)  # what a terminal gets
    assert not ANSI.search(cli(*show).stdout)  # not a terminal
    assert not ANSI.search(cli(*show, FORCE_COLOR="1", NO_COLOR="1").stdout)
    refused = cli("--as", customer, "mobile", "show", "999999999", FORCE_COLOR="1", NO_COLOR="1")
    assert refused.exit_code == 1 and not ANSI.search(refused.stderr)


# -- errors -----------------------------------------------------------------------------------


def test_api_problem_prints_detail_and_every_field_error_and_exits_1(cli: Cli) -> None:
    result = cli("--as", someone(), "mobile", "create", "--category", "hardware",
                 "--subject", "   ", "--message", "x")  # fmt: skip
    assert result.exit_code == 1
    assert result.stdout == ""
    error = flat(result.stderr)
    assert "The request has 2 invalid fields. (422 validation_failed)" in error
    assert "- category: must be one of: account, payment, technical, other" in error
    assert "- subject: must be 1 to 150 characters long" in error


def test_api_problem_with_json_prints_the_problem_document_on_stdout(cli: Cli) -> None:
    result = cli("--as", someone(), "mobile", "show", "987654321", "--json")
    assert result.exit_code == 1
    problem = json.loads(result.stdout)
    assert (problem["status"], problem["code"]) == (404, "not_found")
    assert problem["detail"] in flat(result.stderr)


def test_wrong_role_says_which_token_the_command_needs(cli: Cli) -> None:
    result = cli("--as", someone(), "admin", "queue")
    assert result.exit_code == 1
    assert "403 forbidden" in result.stderr
    assert "--as-admin NAME" in result.stderr


def test_expired_token_says_how_to_mint_a_new_one(cli: Cli) -> None:
    expired = mint("alice", secret=cli.secret(), name="Alex Customer", ttl=-60)
    result = cli("--token", expired, "mobile", "list")
    assert result.exit_code == 1
    error = flat(result.stderr)
    assert "Token expired or invalid: The bearer token has expired." in error
    assert "supportctl token mint --sub alice --name 'Alex Customer'" in error


def test_token_signed_with_another_key_is_refused_with_a_hint_about_keys(
    cli: Cli, tmp_path: Path
) -> None:
    result = cli("--as", someone(), "mobile", "list", SUPPORT_DATA_DIR=str(tmp_path / "elsewhere"))
    assert result.exit_code == 1
    error = flat(result.stderr)
    assert "Token expired or invalid" in error and "401 unauthenticated" in error
    assert "this machine's key" in error and "SUPPORT_DATA_DIR" in error


def test_cannot_connect_says_so_and_exits_1(cli: Cli) -> None:
    port = free_port()
    result = cli("--api-url", f"http://127.0.0.1:{port}", "--as", "alice", "mobile", "list")
    assert result.exit_code == 1
    error = flat(result.stderr)
    assert f"Cannot connect to http://127.0.0.1:{port}" in error
    assert "supportctl serve" in error


def test_timeout_says_so_and_exits_1(cli: Cli) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are queued, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = cli("--api-url", url, "--timeout", "0.3", "--as", "alice", "mobile", "list")
    assert result.exit_code == 1
    error = flat(result.stderr)
    assert f"{url} did not answer within 0.3 s." in error
    assert "--timeout" in error


class _NotTheApi(BaseHTTPRequestHandler):
    """A web server that is not the support API: an HTML page, or a proxy's 502."""

    def do_GET(self) -> None:
        status = 502 if self.path.startswith("/broken") else 200
        page = b"<html><body>Welcome to the intranet</body></html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def not_the_api() -> Iterator[str]:
    web = ThreadingHTTPServer(("127.0.0.1", 0), _NotTheApi)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{web.server_address[1]}"
    web.shutdown()
    web.server_close()
    thread.join()


def test_an_answer_that_is_not_the_api_says_check_the_url(cli: Cli, not_the_api: str) -> None:
    result = cli("--api-url", not_the_api, "--as", "alice", "mobile", "list")
    assert result.exit_code == 1
    error = flat(result.stderr)
    assert "answered 200 with something that is not the support API's JSON" in error
    assert "Check --api-url" in error


def test_an_error_that_is_not_a_problem_shows_status_and_body(cli: Cli, not_the_api: str) -> None:
    result = cli("--api-url", f"{not_the_api}/broken", "--as", "alice", "mobile", "list")
    assert result.exit_code == 1
    error = flat(result.stderr)
    assert "answered 502 Bad Gateway: <html><body>Welcome to the intranet" in error


@pytest.mark.parametrize(
    "args",
    [
        ["--as", "alice", "mobile", "show", "abc"],
        ["--as", "alice", "mobile", "list", "--colour"],
        ["mobile", "list"],  # no token from anywhere
        ["--as", "alice", "--as-admin", "Sam", "mobile", "list"],
        ["--api-url", "ftp://example", "--as", "alice", "mobile", "list"],
        [
            "--as",
            "alice",
            "mobile",
            "create",
            "--category",
            "other",
            "--subject",
            "s",
            "--message",
            "m",
            "--message-file",
            "-",
        ],
        ["--as-admin", "Sam", "admin", "queue", "--mine", "--unassigned"],
        ["--as", "alice", "mobile"],
    ],
    ids=[
        "bad-id",
        "unknown-option",
        "no-token",
        "two-identities",
        "bad-url",
        "two-messages",
        "mine-and-unassigned",
        "no-command",
    ],
)
def test_usage_errors_exit_2_without_calling_the_api(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" or "Usage" in result.output


# -- profiles ---------------------------------------------------------------------------------


def test_login_saves_a_profile_only_the_owner_can_read_and_commands_use_it(cli: Cli) -> None:
    customer = someone()
    token = mint(customer, secret=cli.secret(), name=customer)
    saved = cli("--profile", "qa", "login", "--token", token, SUPPORT_API_URL=cli.server.url)
    assert saved.exit_code == 0, saved.output
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    assert json.loads(cli.config_file.read_text())["profiles"]["qa"] == {
        "apiUrl": cli.server.url,
        "token": token,
    }

    created = cli.runner.invoke(
        app,
        [
            "--profile",
            "qa",
            "mobile",
            "create",
            "--category",
            "other",
            "--subject",
            "Via profile",
            "--message",
            "Hello",
            "--json",
        ],
        env={"SUPPORT_CONFIG_FILE": str(cli.config_file), "SUPPORT_API_URL": None},
    )
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["data"]["subject"] == "Via profile"

    missing = cli("--profile", "nope", "mobile", "list")
    assert missing.exit_code == 2
    assert "no profile 'nope'" in flat(missing.stderr)


def test_login_asks_for_the_token_without_echoing_it(cli: Cli) -> None:
    customer = someone()
    token = mint(customer, secret=cli.secret(), name=customer)
    saved = cli("login", input=f"{token}\n")
    assert saved.exit_code == 0, saved.output
    assert token not in saved.output
    assert json.loads(cli.config_file.read_text())["profiles"]["default"]["token"] == token
    listed = cli("mobile", "list", "--json")  # the default profile, no other token given
    assert listed.exit_code == 0, listed.output


def test_login_refuses_a_token_the_server_does_not_accept_and_saves_nothing(cli: Cli) -> None:
    forged = mint("mallory", secret="not-the-server-key-" + "z" * 32)
    result = cli("login", "--token", forged)
    assert result.exit_code == 1
    assert "Token expired or invalid" in result.stderr
    assert not cli.config_file.exists()


def test_serve_says_which_development_secret_it_uses(cli: Cli) -> None:
    secret_file = Path(cli.server.env["SUPPORT_DATA_DIR"]).resolve() / "dev-jwt-secret"
    log = " ".join(cli.server.log().split())
    assert f"development secret in {secret_file}" in log
    assert secret_file.exists()


# -- attachments, end to end ------------------------------------------------------------------


def test_attached_files_are_listed_downloaded_as_stored_without_metadata_and_removable(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image, PngImagePlugin

    monkeypatch.chdir(tmp_path)
    original = Image.new("RGB", (64, 48))
    original.putdata([(x * 4, y * 5, (x + y) % 256) for y in range(48) for x in range(64)])
    metadata = PngImagePlugin.PngInfo()
    metadata.add_text("Comment", "taken at 51.5007,-0.1246")
    original.save(tmp_path / "screenshot.png", pnginfo=metadata)
    (tmp_path / "app.log").write_text("12:00:01 checkout tapped\n12:00:02 FATAL crash\n")
    customer, agent = someone(), f"Agent {uuid.uuid4().hex[:6]}"

    created = cli.json(
        "--as", customer, "mobile", "create", "--category", "technical",
        "--subject", "Crash on checkout", "--message", "Log and screenshot attached.",
        "--attach", "screenshot.png", "--attach", "app.log",
    )["data"]  # fmt: skip
    request_id = str(created["id"])
    screenshot, log = created["messages"][0]["attachments"]
    assert (screenshot["fileName"], screenshot["contentType"]) == ("screenshot.png", "image/png")
    assert (screenshot["width"], screenshot["height"]) == (64, 48)
    assert (log["fileName"], log["contentType"]) == ("app.log", "text/plain; charset=utf-8")
    assert log["size"] == (tmp_path / "app.log").stat().st_size

    shown = cli("--as", customer, "mobile", "show", request_id)
    assert shown.exit_code == 0, shown.output
    screen = flat(ANSI.sub("", shown.stdout))
    png_size = f"{screenshot['size']} B" if screenshot["size"] < 1024 else "KiB"
    assert re.search(rf"screenshot\.png \(image/png, [^)]*{png_size}[^)]*, 64x48\)", screen)
    assert f"app.log (text/plain, {log['size']} B)" in screen
    assert f"id {screenshot['id']}" in screen and f"id {log['id']}" in screen

    (tmp_path / "staff").mkdir()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "staff" / "fixed.png")
    answered = cli("--as-admin", agent, "admin", "reply", request_id,
                   "--body", "Fixed, see the screen.", "--attach", "staff/fixed.png")  # fmt: skip
    assert answered.exit_code == 0, answered.output
    assert "fixed.png (image/png" in flat(ANSI.sub("", answered.stdout))

    staff_token = mint(admin_id_for(agent), secret=cli.secret(), role="admin", name=agent)
    got = cli("--as", customer, "attachments", "get", screenshot["id"], "-o", "downloaded.png")
    assert got.exit_code == 0, got.output
    downloaded = (tmp_path / "downloaded.png").read_bytes()
    served = httpx.get(
        f"{cli.server.url}/api/admin/attachments/{screenshot['id']}",
        headers={"Authorization": f"Bearer {staff_token}"},
        timeout=30,
    )
    assert served.status_code == 200
    assert downloaded == served.content and len(downloaded) == screenshot["size"]
    with Image.open(tmp_path / "downloaded.png") as stored:
        assert stored.size == (64, 48)
        assert stored.convert("RGB").tobytes() == original.tobytes()
        assert "Comment" not in stored.info and not getattr(stored, "text", {})

    removed = cli("--as-admin", agent, "admin", "attachments", "remove", screenshot["id"])
    assert removed.exit_code == 0, removed.output
    assert "its message now lists it as removed" in flat(removed.stdout)
    after = flat(ANSI.sub("", cli("--as", customer, "mobile", "show", request_id).stdout))
    assert re.search(r"screenshot\.png \(image/png, [^)]*\) removed", after)
    assert f"id {screenshot['id']}" not in after and f"id {log['id']}" in after
    gone = cli("--as", customer, "attachments", "get", screenshot["id"], "-o", "again.png")
    assert gone.exit_code == 1
