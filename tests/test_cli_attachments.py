"""supportctl's attachments against a small fake of the API (contract 1.1).

The server side of attachments is built elsewhere, so these tests serve a tiny
Starlette app in a thread (real HTTP, so uploads really stream) that does what the
contract says for the endpoints the CLI calls: uploads (``multipart/form-data``
with one part ``file``; type from the bytes; 413, 415 and 422 as problems), creates
and replies naming ``attachments``, details whose messages carry their files,
downloads with ``Content-Disposition``, and staff removal. It records what it
received, for the assertions.
"""

from __future__ import annotations

import io
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner, Result

from support_requests.cli.attachments import safe_file_name
from support_requests.cli.main import app
from support_requests.cli.render import human_size
from tests.helpers import flat
from tests.servers import app_in_thread

NOW = "2026-12-06T04:00:00.000Z"
MIB = 1024 * 1024


# -- the fake API ----------------------------------------------------------------------


def new_id() -> str:
    """A random attachment id; not starting with '-' (one test covers those on purpose)."""
    return "a" + secrets.token_urlsafe(16)[1:]


@dataclass
class Stored:
    """An upload as the fake keeps it."""

    id: str
    owner: str
    file_name: str
    content_type: str
    content: bytes
    width: int | None
    height: int | None
    attached: bool = False
    removed: bool = False

    def as_attachment(self, side: str) -> dict[str, Any]:
        url = None if self.removed else f"/api/{side}/attachments/{self.id}"
        image = self.width is not None and not self.removed
        return {
            "id": self.id,
            "fileName": self.file_name,
            "contentType": self.content_type,
            "size": len(self.content),
            "width": self.width,
            "height": self.height,
            "url": url,
            "thumbnailUrl": f"{url}/thumbnail" if image else None,
            "removed": self.removed,
        }


@dataclass
class Upload:
    """What one upload request carried."""

    path: str
    content_type: str
    parts: list[str]
    file_name: str | None
    content: bytes


@dataclass
class FakeApi:
    """The attachment endpoints and just enough of the rest, per the contract."""

    max_bytes: int = 4 * MIB
    stored: dict[str, Stored] = field(default_factory=dict)
    uploads: list[Upload] = field(default_factory=list)
    sent: list[tuple[str, str, Any]] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    url: str = ""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/{side}/attachments", self.upload, methods=["POST"]),
                Route("/api/{side}/attachments/{attachment_id}", self.download, methods=["GET"]),
                Route("/api/admin/attachments/{attachment_id}", self.remove, methods=["DELETE"]),
                Route("/api/mobile/support-requests", self.create, methods=["POST"]),
                Route("/api/{side}/support-requests/{request_id:int}", self.show),
                Route(
                    "/api/{side}/support-requests/{request_id:int}/messages",
                    self.reply,
                    methods=["POST"],
                ),
                Route("/api/admin/support-requests/{request_id:int}/events", self.events),
                Route("/api/admin/admins", self.admins),
            ]
        )

    # helpers

    @staticmethod
    def caller(request: Request) -> dict[str, Any]:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        return dict(jwt.decode(token, options={"verify_signature": False}))

    @staticmethod
    def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
        document = {"type": "about:blank", "title": code, "status": status, "detail": detail}
        return JSONResponse(
            {**document, "message": detail, "code": code, **extra},
            status_code=status,
            media_type="application/problem+json",
        )

    def wrong_side(self, request: Request, side: str) -> JSONResponse | None:
        admin = self.caller(request).get("role") == "admin"
        if admin == (side == "admin"):
            return None
        return self.problem(403, "forbidden", f"The {side} API needs a {side} token.")

    def detail(self, number: int, side: str) -> dict[str, Any]:
        item = self.requests[number]
        messages = [
            {
                "id": index,
                "authorType": message["authorType"],
                **({"authorId": message["authorId"]} if side == "admin" else {}),
                "authorName": message["authorName"],
                "authorImage": None,
                "body": message["body"],
                "attachments": [self.stored[i].as_attachment(side) for i in message["files"]],
                "createdAt": NOW,
            }
            for index, message in enumerate(item["messages"], start=1)
        ]
        detail: dict[str, Any] = {
            "id": number,
            "category": item["category"],
            "subject": item["subject"],
            "status": "open",
            "isAssigned": False,
            "resolutionNote": None,
            "resolvedAt": None,
            "closedAt": None,
            "lastCustomerMessageAt": NOW,
            "lastAdminMessageAt": None,
            "messages": messages,
            "createdAt": NOW,
            "updatedAt": NOW,
            "allowedActions": ["reply"],
        }
        if side == "admin":
            detail["assignedAdminId"] = None
            detail["customer"] = {"id": item["customer"], "name": item["customer"], "image": None}
        return detail

    def attach(self, request: Request, body: dict[str, Any]) -> list[str] | JSONResponse:
        """The ``attachments`` of a create or reply, checked as the contract says."""
        caller = self.caller(request)["sub"]
        ids: list[str] = body.get("attachments", [])
        for index, attachment_id in enumerate(ids):
            stored = self.stored.get(attachment_id)
            if stored is None or stored.owner != caller or stored.attached:
                message = "must be one of your uploads, not attached yet"
                return self.problem(
                    422,
                    "validation_failed",
                    "The request is not valid.",
                    errors=[{"field": f"attachments[{index}]", "message": message}],
                )
        for attachment_id in ids:
            self.stored[attachment_id].attached = True
        return ids

    def add_message(self, request: Request, number: int, body: str, files: list[str]) -> None:
        caller = self.caller(request)
        self.requests[number]["messages"].append(
            {
                "authorType": "admin" if caller.get("role") == "admin" else "customer",
                "authorId": caller["sub"],
                "authorName": caller.get("name"),
                "body": body,
                "files": files,
            }
        )

    # endpoints

    async def upload(self, request: Request) -> Response:
        side = request.path_params["side"]
        refused = self.wrong_side(request, side)
        if refused is not None:
            return refused
        content_type = request.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            return self.problem(415, "unsupported_media_type", "Send multipart/form-data.")
        async with request.form() as form:
            parts = [name for name, _ in form.multi_items()]
            part = form.get("file")
            if not isinstance(part, UploadFile):
                return self.problem(422, "validation_failed", "The part 'file' is missing.")
            content = await part.read()
            file_name = part.filename
        self.uploads.append(Upload(request.url.path, content_type, parts, file_name, content))
        if parts != ["file"]:
            return self.problem(422, "validation_failed", "Send exactly one part, 'file'.")
        if len(content) > self.max_bytes:
            detail = f"The file is over {human_size(self.max_bytes)}."
            return self.problem(413, "payload_too_large", detail)
        if not content:
            return self.problem(422, "validation_failed", "The file is empty.")
        width = height = None
        if content.startswith(b"\x89PNG\r\n\x1a\n"):
            kind = "image/png"
            width, height = Image.open(io.BytesIO(content)).size
        else:
            try:
                content.decode()
            except UnicodeDecodeError:
                detail = (
                    "The file is not a PNG, JPEG, GIF, WebP, HEIC, PDF or UTF-8 text file; "
                    "attach one of those."
                )
                return self.problem(415, "unsupported_attachment_type", detail)
            kind = "text/plain; charset=utf-8"
        owner = self.caller(request)["sub"]
        name = (file_name or "").rsplit("/", 1)[-1]
        stored = Stored(new_id(), owner, name, kind, content, width, height)
        self.stored[stored.id] = stored
        data = {
            key: value
            for key, value in stored.as_attachment(side).items()
            if key not in ("url", "thumbnailUrl", "removed")
        }
        return JSONResponse(
            {"message": "Uploaded.", "data": {**data, "createdAt": NOW, "expiresAt": NOW}},
            status_code=201,
            headers={"Location": f"/api/{side}/attachments/{stored.id}"},
        )

    async def create(self, request: Request) -> Response:
        body = await request.json()
        self.sent.append(("POST", request.url.path, body))
        files = self.attach(request, body)
        if isinstance(files, JSONResponse):
            return files
        number = len(self.requests) + 1
        self.requests[number] = {
            "category": body["category"],
            "subject": body["subject"],
            "customer": self.caller(request)["sub"],
            "messages": [],
        }
        self.add_message(request, number, body["message"], files)
        return JSONResponse(
            {"message": "Created.", "data": self.detail(number, "mobile")}, status_code=201
        )

    async def show(self, request: Request) -> Response:
        side, number = request.path_params["side"], request.path_params["request_id"]
        refused = self.wrong_side(request, side)
        if refused is not None:
            return refused
        return JSONResponse({"message": "Found.", "data": self.detail(number, side)})

    async def reply(self, request: Request) -> Response:
        side, number = request.path_params["side"], request.path_params["request_id"]
        body = await request.json()
        self.sent.append(("POST", request.url.path, body))
        files = self.attach(request, body)
        if isinstance(files, JSONResponse):
            return files
        self.add_message(request, number, body["body"], files)
        return JSONResponse(
            {"message": "Replied.", "data": self.detail(number, side)}, status_code=201
        )

    async def events(self, request: Request) -> Response:
        return JSONResponse({"message": "History.", "data": []})

    async def admins(self, request: Request) -> Response:
        return JSONResponse({"message": "Admins.", "data": []})

    async def download(self, request: Request) -> Response:
        side, attachment_id = request.path_params["side"], request.path_params["attachment_id"]
        self.downloads.append(request.url.path)
        refused = self.wrong_side(request, side)
        if refused is not None:
            return refused
        stored = self.stored.get(attachment_id)
        caller = self.caller(request)["sub"]
        if stored is None or stored.removed or (side == "mobile" and stored.owner != caller):
            return self.problem(404, "not_found", f"Attachment {attachment_id} not found.")
        disposition = "inline" if stored.width is not None else "attachment"
        return Response(
            stored.content,
            media_type=stored.content_type,
            headers={
                "Content-Disposition": f'{disposition}; filename="{stored.file_name}"',
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private",
            },
        )

    async def remove(self, request: Request) -> Response:
        refused = self.wrong_side(request, "admin")
        if refused is not None:
            return refused
        stored = self.stored.get(request.path_params["attachment_id"])
        if stored is None:
            return self.problem(404, "not_found", "No such attachment.")
        stored.removed = True
        return JSONResponse({"message": "Removed.", "data": stored.as_attachment("admin")})

    def seed(self, owner: str, file_name: str, content: bytes, **facts: Any) -> Stored:
        """An upload already stored (``facts`` override what the bytes say)."""
        stored = Stored(
            new_id(),
            owner,
            file_name,
            facts.get("content_type", "text/plain; charset=utf-8"),
            content,
            facts.get("width"),
            facts.get("height"),
        )
        self.stored[stored.id] = stored
        return stored


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """The fake, served on a free port in a thread, for this test only."""
    fake = FakeApi()
    with app_in_thread(fake.app()) as url:
        fake.url = url
        yield fake


@dataclass
class Cli:
    """supportctl against the fake, in ``workdir`` (also its current directory)."""

    api: FakeApi
    workdir: Path
    runner: CliRunner = field(default_factory=CliRunner)

    def __call__(self, *args: str, **env: str) -> Result:
        environment = {
            "SUPPORT_API_URL": self.api.url,
            "SUPPORT_DATA_DIR": str(self.workdir / ".supportdesk"),
            "SUPPORT_CONFIG_FILE": str(self.workdir / "config.json"),
            "COLUMNS": "200",
            **env,
        }
        result = self.runner.invoke(app, list(args), env=environment)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert "Traceback" not in result.output
        return result


@pytest.fixture
def cli(api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name in list(os.environ):
        if name.startswith("SUPPORT_") or name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return Cli(api, tmp_path)


def png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A real PNG, made with Pillow."""
    Image.new("RGB", size, (200, 30, 30)).save(path, format="PNG")
    return path


def open_request(cli: Cli, customer: str = "alice") -> int:
    created = cli("--as", customer, "mobile", "create", "--category", "technical",
                  "--subject", "App crashes", "--message", "It crashes.")  # fmt: skip
    assert created.exit_code == 0, created.output
    return max(cli.api.requests)


# -- --attach ----------------------------------------------------------------------------


def test_reply_with_attach_uploads_the_file_then_names_its_id(cli: Cli) -> None:
    number = open_request(cli)
    screenshot = png(cli.workdir / "screenshot.png")

    replied = cli("--as", "alice", "mobile", "reply", str(number),
                  "--body", "Here is the error", "--attach", str(screenshot))  # fmt: skip

    assert replied.exit_code == 0, replied.output
    [upload] = cli.api.uploads
    assert upload.path == "/api/mobile/attachments"
    assert upload.content_type.startswith("multipart/form-data; boundary=")
    assert upload.parts == ["file"]
    assert upload.file_name == "screenshot.png"
    assert upload.content == screenshot.read_bytes()
    [stored] = cli.api.stored.values()
    assert cli.api.sent[-1] == (
        "POST",
        f"/api/mobile/support-requests/{number}/messages",
        {"body": "Here is the error", "attachments": [stored.id]},
    )
    size = human_size(len(upload.content))
    assert f"+ screenshot.png (image/png, {size}, 64x48) id {stored.id}" in flat(replied.stdout)


def test_create_uploads_every_attach_file_in_order_and_sends_their_ids(cli: Cli) -> None:
    log = cli.workdir / "logs" / "app.log"
    log.parent.mkdir()
    log.write_text("E/crash: NullPointerException\n")
    screenshot = png(cli.workdir / "screenshot.png")

    created = cli("--as", "alice", "mobile", "create", "--category", "technical",
                  "--subject", "Crash", "--message", "See the files.",
                  "--attach", str(screenshot), "--attach", str(log), "--json")  # fmt: skip

    assert created.exit_code == 0, created.output
    assert [upload.file_name for upload in cli.api.uploads] == ["screenshot.png", "app.log"]
    ids = list(cli.api.stored)
    assert cli.api.sent == [
        (
            "POST",
            "/api/mobile/support-requests",
            {
                "category": "technical",
                "subject": "Crash",
                "message": "See the files.",
                "attachments": ids,
            },
        )
    ]
    assert '"fileName":"app.log"' in created.stdout.replace(" ", "")


def test_without_attach_the_body_has_no_attachments(cli: Cli) -> None:
    number = open_request(cli)

    assert cli("--as", "alice", "mobile", "reply", str(number), "--body", "More.").exit_code == 0

    assert cli.api.uploads == []
    assert cli.api.sent[-1][2] == {"body": "More."}


def test_admin_reply_uploads_on_the_admin_side(cli: Cli) -> None:
    number = open_request(cli)
    notes = cli.workdir / "workaround.txt"
    notes.write_text("Clear the app's cache, then sign in again.\n")

    replied = cli("--as-admin", "Sam Rivera", "admin", "reply", str(number),
                  "--body", "Try this.", "--attach", str(notes))  # fmt: skip

    assert replied.exit_code == 0, replied.output
    [upload] = cli.api.uploads
    assert upload.path == "/api/admin/attachments"
    [upload_id] = cli.api.stored
    assert cli.api.sent[-1][2] == {"body": "Try this.", "attachments": [upload_id]}
    staff_bubble = flat(replied.stdout.replace("┃", " "))
    assert f"+ workaround.txt (text/plain, 43 B) id {upload_id}" in staff_bubble


@pytest.mark.parametrize("problem", ["missing", "a directory"])
def test_a_file_that_cannot_be_read_exits_1_before_anything_is_sent(cli: Cli, problem: str) -> None:
    screenshot = png(cli.workdir / "screenshot.png")
    unreadable = cli.workdir / "nowhere.png"
    if problem == "a directory":
        unreadable.mkdir()

    replied = cli("--as", "alice", "mobile", "reply", "1", "--body", "See",
                  "--attach", str(screenshot), "--attach", str(unreadable))  # fmt: skip

    assert replied.exit_code == 1
    assert f"Cannot attach {unreadable}" in flat(replied.stderr)
    assert (cli.api.uploads, cli.api.sent) == ([], [])


def test_more_files_than_a_message_takes_exits_1_before_anything_is_sent(cli: Cli) -> None:
    screenshot = png(cli.workdir / "screenshot.png")

    replied = cli("--as", "alice", "mobile", "reply", "1", "--body", "See",
                  *["--attach", str(screenshot)] * 6)  # fmt: skip

    assert replied.exit_code == 1
    assert "6 files given with --attach; a message takes at most 5." in flat(replied.stderr)
    assert (cli.api.uploads, cli.api.sent) == ([], [])


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (b"\x00\x01\xfe\xff" * 64, "415 unsupported_attachment_type", "is not a PNG, JPEG"),
        (b"", "422 validation_failed", "The file is empty."),
        (b"x" * (4 * MIB + 1), "413 payload_too_large", "The file is over 4.0 MiB."),
    ],
    ids=["unsupported type", "empty", "too large"],
)
def test_a_refused_upload_prints_the_problem_and_creates_nothing(
    cli: Cli, content: bytes, status: str, detail: str
) -> None:
    refused = cli.workdir / "file.bin"
    refused.write_bytes(content)

    created = cli("--as", "alice", "mobile", "create", "--category", "technical",
                  "--subject", "Crash", "--message", "See", "--attach", str(refused))  # fmt: skip

    assert created.exit_code == 1
    assert detail in flat(created.stderr)
    assert f"({status})" in flat(created.stderr)
    assert len(cli.api.uploads) == 1
    assert (cli.api.sent, cli.api.requests) == ([], {})


def test_a_refused_upload_with_json_prints_the_problem_document(cli: Cli) -> None:
    empty = cli.workdir / "empty.txt"
    empty.touch()

    replied = cli("--as", "alice", "mobile", "reply", "1", "--body", "See",
                  "--attach", str(empty), "--json")  # fmt: skip

    assert replied.exit_code == 1
    assert '"code":"validation_failed"' in replied.stdout
    assert cli.api.sent == []


def test_a_file_over_1_mib_shows_a_progress_bar_on_a_terminal(cli: Cli) -> None:
    number = open_request(cli)
    big = cli.workdir / "big.log"
    big.write_bytes(b"0123456789abcdef\n" * (2 * MIB // 17 + 1))

    replied = cli("--as", "alice", "mobile", "reply", str(number), "--body", "The log",
                  "--attach", str(big), FORCE_COLOR="1")  # fmt: skip

    assert replied.exit_code == 0, replied.output
    assert cli.api.uploads[0].content == big.read_bytes()
    progress = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", replied.stderr)
    assert "big.log" in progress
    assert "2.0/2.0 MiB" in progress


def test_no_progress_bar_when_not_a_terminal_or_for_a_small_file(cli: Cli) -> None:
    number = open_request(cli)
    big = cli.workdir / "big.log"
    big.write_bytes(b"x" * (2 * MIB))
    small = cli.workdir / "small.log"
    small.write_bytes(b"x" * MIB)

    piped = cli("--as", "alice", "mobile", "reply", str(number), "--body", "Log",
                "--attach", str(big))  # fmt: skip
    small_on_terminal = cli("--as", "alice", "mobile", "reply", str(number), "--body", "Log",
                            "--attach", str(small), FORCE_COLOR="1")  # fmt: skip

    assert (piped.exit_code, small_on_terminal.exit_code) == (0, 0)
    assert (piped.stderr, small_on_terminal.stderr) == ("", "")


# -- show ------------------------------------------------------------------------------


def seeded_request(cli: Cli) -> tuple[int, str]:
    """A request whose first message has a screenshot and a removed text file."""
    number = open_request(cli)
    shot = cli.api.seed("alice", "screenshot.png", b"x" * 49357, content_type="image/png",
                        width=1170, height=2532)  # fmt: skip
    password = cli.api.seed("alice", "password.txt", b"p" * 120)
    password.removed = True
    cli.api.requests[number]["messages"][0]["files"] = [shot.id, password.id]
    return number, shot.id


@pytest.mark.parametrize("side", ["mobile", "admin"])
def test_show_lists_each_messages_attachments_with_type_size_and_pixels(
    cli: Cli, side: str
) -> None:
    number, shot = seeded_request(cli)
    who = ["--as", "alice"] if side == "mobile" else ["--as-admin", "Sam Rivera"]

    shown = cli(*who, side, "show", str(number))

    assert shown.exit_code == 0, shown.output
    text = flat(shown.stdout)
    assert (
        f"It crashes. + screenshot.png (image/png, 48.2 KiB, 1170x2532) id {shot} "
        "+ password.txt (text/plain, 120 B) removed"
    ) in text


# -- attachments get -------------------------------------------------------------------


def test_get_saves_under_the_servers_file_name_in_the_current_directory(cli: Cli) -> None:
    stored = cli.api.seed("alice", "crash.log", b"E/crash: boom\n")

    got = cli("--as", "alice", "attachments", "get", stored.id)

    assert got.exit_code == 0, got.output
    assert cli.api.downloads == [f"/api/mobile/attachments/{stored.id}"]
    assert (cli.workdir / "crash.log").read_bytes() == b"E/crash: boom\n"
    assert "Saved crash.log (text/plain, 14 B)." in flat(got.stdout)
    assert sorted(p.name for p in cli.workdir.iterdir() if p.name.startswith(".crash")) == []


def test_get_with_an_admin_token_uses_the_admin_side(cli: Cli) -> None:
    stored = cli.api.seed("alice", "crash.log", b"boom\n")

    got = cli("--as-admin", "Sam Rivera", "attachments", "get", stored.id, "-o", "copy.log")

    assert got.exit_code == 0, got.output
    assert cli.api.downloads == [f"/api/admin/attachments/{stored.id}"]
    assert (cli.workdir / "copy.log").read_bytes() == b"boom\n"


def test_get_a_real_upload_round_trips_the_bytes(cli: Cli) -> None:
    number = open_request(cli)
    screenshot = png(cli.workdir / "screenshot.png", (320, 200))
    cli("--as", "alice", "mobile", "reply", str(number), "--body", "See",
        "--attach", str(screenshot))  # fmt: skip
    [stored] = cli.api.stored

    (cli.workdir / "downloads").mkdir()

    got = cli("--as", "alice", "attachments", "get", stored, "-o", "downloads")

    assert got.exit_code == 0, got.output
    assert (cli.workdir / "downloads" / "screenshot.png").read_bytes() == screenshot.read_bytes()


def test_get_into_a_folder_that_does_not_exist_exits_1(cli: Cli) -> None:
    stored = cli.api.seed("alice", "crash.log", b"boom\n")

    got = cli("--as", "alice", "attachments", "get", stored.id, "-o", "nowhere/crash.log")

    assert got.exit_code == 1
    assert f"Cannot write {Path('nowhere/crash.log')}: No such file or directory." in flat(
        got.stderr
    )


def test_get_never_writes_outside_the_current_directory(cli: Cli) -> None:
    stored = cli.api.seed("alice", "../../.bashrc", b"echo gotcha\n")

    got = cli("--as", "alice", "attachments", "get", stored.id)

    assert got.exit_code == 0, got.output
    assert (cli.workdir / "bashrc").read_bytes() == b"echo gotcha\n"
    assert not (cli.workdir.parent / ".bashrc").exists()


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("screenshot.png", "screenshot.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\shot.png", "shot.png"),
        ("..", ""),
        (".hidden", "hidden"),
        ("a\x00b\x1bc.txt", "abc.txt"),
        ("", ""),
        (None, ""),
    ],
)
def test_a_file_name_from_the_server_is_made_safe(given: str | None, safe: str) -> None:
    assert safe_file_name(given) == safe


def test_get_refuses_to_overwrite_a_file_unless_forced(cli: Cli) -> None:
    stored = cli.api.seed("alice", "crash.log", b"new\n")
    existing = cli.workdir / "crash.log"
    existing.write_bytes(b"mine\n")

    refused = cli("--as", "alice", "attachments", "get", stored.id)
    assert refused.exit_code == 1
    assert "crash.log exists; pass --force to overwrite it" in flat(refused.stderr)
    assert existing.read_bytes() == b"mine\n"

    forced = cli("--as", "alice", "attachments", "get", stored.id, "--force")
    assert forced.exit_code == 0, forced.output
    assert existing.read_bytes() == b"new\n"


def test_get_to_dash_writes_the_bytes_to_stdout(cli: Cli) -> None:
    content = png(cli.workdir / "screenshot.png").read_bytes()
    stored = cli.api.seed("alice", "screenshot.png", content, content_type="image/png", width=64)

    got = cli("--as", "alice", "attachments", "get", stored.id, "-o", "-")

    assert got.exit_code == 0
    assert got.stdout_bytes == content


def test_get_someone_elses_attachment_prints_the_404_and_writes_nothing(cli: Cli) -> None:
    stored = cli.api.seed("bob", "secret.txt", b"bob's\n")

    got = cli("--as", "alice", "attachments", "get", stored.id)

    assert got.exit_code == 1
    assert f"Attachment {stored.id} not found. (404 not_found)" in flat(got.stderr)
    assert list(cli.workdir.glob("*secret*")) == []


# -- admin attachments remove ----------------------------------------------------------


def test_remove_prints_what_was_removed(cli: Cli) -> None:
    number, shot = seeded_request(cli)

    removed = cli("--as-admin", "Sam Rivera", "admin", "attachments", "remove", shot)

    assert removed.exit_code == 0, removed.output
    assert cli.api.stored[shot].removed
    assert (
        f"Removed screenshot.png (image/png, 48.2 KiB, 1170x2532), id {shot}; "
        "its message now lists it as removed."
    ) in flat(removed.stdout)
    shown = cli("--as", "alice", "mobile", "show", str(number))
    assert "+ screenshot.png (image/png, 48.2 KiB, 1170x2532) removed" in flat(shown.stdout)


def test_remove_with_json_prints_the_apis_answer(cli: Cli) -> None:
    _, shot = seeded_request(cli)

    removed = cli("--as-admin", "Sam Rivera", "admin", "attachments", "remove", shot, "--json")

    assert removed.exit_code == 0
    assert removed.stdout.startswith('{"message":"Removed.","data":{"id":"' + shot)
    assert '"removed":true' in removed.stdout


def test_remove_as_a_customer_says_it_needs_an_admin_token(cli: Cli) -> None:
    _, shot = seeded_request(cli)

    removed = cli("--as", "alice", "admin", "attachments", "remove", shot)

    assert removed.exit_code == 1
    assert "Admin commands need an admin token" in flat(removed.stderr)
    assert not cli.api.stored[shot].removed


def test_get_an_id_that_starts_with_a_dash_after_double_dash(cli: Cli) -> None:
    stored = cli.api.seed("alice", "crash.log", b"boom\n")
    cli.api.stored["-" + stored.id[1:]] = cli.api.stored.pop(stored.id)
    stored.id = "-" + stored.id[1:]

    got = cli("--as", "alice", "attachments", "get", "--", stored.id)

    assert got.exit_code == 0, got.output
    assert cli.api.downloads == [f"/api/mobile/attachments/{stored.id}"]
