"""Clients generated from the served spec work: Python (driven through the mobile lifecycle
against a live server), Kotlin, Swift and TypeScript (generated without a warning about the
spec), and every generated name is an API verb, never a Python path (``handlers_…``).

``openapi-python-client`` is a test dependency. ``openapi-generator-cli`` (PyPI) bundles the
generator's jar and needs only Java: without Java those tests skip, except under CI, where a
missing Java is a failure.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from tests.helpers import mint, require_tool, run_ok
from tests.servers import app_in_thread

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PACKAGE = "support_requests_client"
# A name made from a Python path (handlers.mobile.create_request) in any generator's casing.
_HANDLER_NAME = re.compile(r"handlers[_.]?(?:mobile|admin|health)", re.IGNORECASE)
# The attachments' stored types, each a binary response in the spec.
FILE_TYPES = (
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/heic", "application/pdf",
    "text/plain",
)  # fmt: skip
# The generator's own notices about itself, not about the spec.
# Also swift5's rename of the downloads' `Range` header (RFC 9110 names it; `Range` is a
# Swift type) to ModelRange in its own code: nothing in the spec can be renamed for it.
GENERATOR_NOTICES = (
    "Generator 'swift5' is considered deprecated",
    "IMPORTANT: This generator has been deprecated. Please use `swift6` instead",
    # The downloads' ``Range`` header (RFC 9110's name) trips swift5's reserved-word check for
    # model names; no model is made of it, and the parameter is generated as ``range``.
    "Range (reserved word) cannot be used as model name",
)


@pytest.fixture
def live_url(settings: Settings) -> Iterator[str]:
    with app_in_thread(create_app(settings)) as base_url:
        yield base_url


def _run(*command: str | Path, cwd: Path) -> str:
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = run_ok(*command, cwd=cwd, env=environment)
    return result.stdout + result.stderr


# -- Python -------------------------------------------------------------------------------


@pytest.fixture
def python_client(live_url: str, tmp_path: Path) -> Iterator[ModuleType]:
    """A client package generated from the live server's ``/openapi.json``, imported.

    The generator reads only JSON, text and ``application/octet-stream`` responses, so the
    attachments' stored types (the spec names each one) are read as bytes, as they are.
    """
    config = tmp_path / "openapi-python-client.json"
    config.write_text(
        json.dumps(
            {"content_type_overrides": dict.fromkeys(FILE_TYPES, "application/octet-stream")}
        )
    )
    output = _run(
        BIN / "openapi-python-client",
        "generate",
        "--url",
        f"{live_url}/openapi.json",
        "--config",
        config,
        "--meta",
        "none",
        "--output-path",
        tmp_path / PACKAGE,
        cwd=tmp_path,
    )
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_the_generated_python_client_drives_the_mobile_lifecycle(
    python_client: ModuleType, live_url: str
) -> None:
    def api(name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.api.{name}")

    models = importlib.import_module(f"{PACKAGE}.models")
    admin_id = str(uuid.uuid4())
    customer_token = mint(name="Alex Customer")
    admin_token = mint(admin_id, role="admin", name="Support Agent")
    Client = python_client.AuthenticatedClient
    with (
        Client(base_url=live_url, token=customer_token, raise_on_unexpected_status=True) as me,
        Client(base_url=live_url, token=admin_token, raise_on_unexpected_status=True) as staff,
    ):
        _lifecycle(api, models, me, staff, uuid.UUID(admin_id))


def _screenshot() -> bytes:
    """A real PNG, 40x30, made with Pillow."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _lifecycle(api: Any, models: Any, customer: Any, staff: Any, admin_id: uuid.UUID) -> None:
    types = importlib.import_module(f"{PACKAGE}.types")
    uploaded = api("mobile.upload_attachment").sync_detailed(
        client=customer,
        body=models.AttachmentUpload(
            file=types.File(
                payload=io.BytesIO(_screenshot()), file_name="screenshot.png", mime_type="image/png"
            )
        ),
    )
    assert uploaded.status_code == 201
    upload = uploaded.parsed.data
    assert uploaded.headers["Location"] == f"/api/mobile/attachments/{upload.id}"
    assert (upload.file_name, upload.width, upload.height) == ("screenshot.png", 40, 30)

    created = api("mobile.create_support_request").sync_detailed(
        client=customer,
        body=models.CreateSupportRequest(
            category=models.Category.TECHNICAL,
            subject="App crashes on checkout",
            message="App crashes on checkout.",
            attachments=[upload.id],
        ),
    )
    assert created.status_code == 201
    request = created.parsed.data
    assert created.headers["Location"] == f"/api/mobile/support-requests/{request.id}"
    assert (request.status, request.is_assigned) == (models.Status.OPEN, False)
    assert [m.body for m in request.messages] == ["App crashes on checkout."]

    detail = api("mobile.get_support_request").sync(request.id, client=customer).data
    [attached] = detail.messages[0].attachments
    assert attached.id == upload.id
    assert attached.content_type == models.AttachmentContentType.IMAGEPNG
    assert (attached.width, attached.height, attached.size) == (40, 30, upload.size)
    assert attached.url == f"/api/mobile/attachments/{upload.id}"
    assert attached.thumbnail_url == f"/api/mobile/attachments/{upload.id}/thumbnail"
    downloaded = api("mobile.download_attachment").sync_detailed(upload.id, client=customer)
    assert downloaded.status_code == 200
    assert downloaded.headers["Content-Type"] == "image/png"
    assert isinstance(downloaded.parsed, types.File)
    content = downloaded.parsed.payload.read()
    assert content == downloaded.content and len(content) == upload.size
    from PIL import Image

    with Image.open(io.BytesIO(content)) as image:
        assert (image.format, image.size) == ("PNG", (40, 30))

    listed = api("mobile.list_support_requests").sync(client=customer, limit=10)
    assert [item.id for item in listed.data] == [request.id]
    assert listed.meta.next_cursor is None

    answered = api("admin.admin_reply_to_support_request").sync(
        request.id, client=staff, body=models.Reply(body="Thanks, we are looking into it.")
    )
    assert (answered.data.status, answered.data.assigned_admin_id) == (
        models.Status.IN_PROGRESS,
        admin_id,
    )

    fetched = api("mobile.get_support_request").sync(request.id, client=customer).data
    assert (fetched.status, fetched.is_assigned) == (models.Status.IN_PROGRESS, True)
    assert [(m.author_type.value, m.author_name) for m in fetched.messages] == [
        ("customer", "Alex Customer"),
        ("admin", "Support Agent"),
    ]
    assert not hasattr(fetched, "assigned_admin_id")

    resolved = (
        api("admin.admin_update_support_request")
        .sync(
            request.id,
            client=staff,
            body=models.AdminUpdate(
                status=models.Status.RESOLVED, resolution_note="Fixed in app version 4.2.1."
            ),
        )
        .data
    )
    assert resolved.status == models.Status.RESOLVED
    assert resolved.resolved_at is not None

    reopened = (
        api("mobile.reply_to_support_request")
        .sync(request.id, client=customer, body=models.Reply(body="It crashes again."))
        .data
    )
    assert (reopened.status, reopened.resolved_at, reopened.resolution_note) == (
        models.Status.OPEN,
        None,
        None,
    )
    assert reopened.allowed_actions == [models.MobileAction.REPLY]

    api("admin.admin_update_support_request").sync(
        request.id, client=staff, body=models.AdminUpdate(status=models.Status.CLOSED)
    )
    refused = api("mobile.reply_to_support_request").sync_detailed(
        request.id, client=customer, body=models.Reply(body="Hello?")
    )
    assert refused.status_code == 400
    assert refused.parsed.code == models.ProblemCode.REQUEST_CLOSED
    closed = api("mobile.get_support_request").sync(request.id, client=customer).data
    assert (closed.status, closed.allowed_actions, len(closed.messages)) == (
        models.Status.CLOSED,
        [models.MobileAction.RATE],
        3,
    )
    rated = (
        api("mobile.rate_support_request")
        .sync(request.id, client=customer, body=models.RatingInput(score=4, comment="Thanks."))
        .data
    )
    assert (rated.status, rated.rating.score, rated.rating.comment) == (
        models.Status.CLOSED,
        4,
        "Thanks.",
    )

    missing = api("mobile.get_support_request").sync_detailed(request.id + 1000, client=customer)
    assert missing.status_code == 404
    assert missing.parsed.code == models.ProblemCode.NOT_FOUND


def test_the_generated_python_client_shows_the_conversation_as_each_side_sees_it(
    python_client: ModuleType, live_url: str
) -> None:
    """Round 2's fields through the generated client: device context, the badge and the
    read marker, internal notes, tags and the statistics."""

    def api(name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.api.{name}")

    models = importlib.import_module(f"{PACKAGE}.models")
    Client = python_client.AuthenticatedClient
    customer_token = mint(name="Alex Customer")
    admin_token = mint(str(uuid.uuid4()), role="admin", name="Support Agent")
    with (
        Client(base_url=live_url, token=customer_token, raise_on_unexpected_status=True) as me,
        Client(base_url=live_url, token=admin_token, raise_on_unexpected_status=True) as staff,
    ):
        created = (
            api("mobile.create_support_request")
            .sync(
                client=me,
                body=models.CreateSupportRequest(
                    category=models.Category.TECHNICAL,
                    subject="Crash after the update",
                    message="The app closes when I open my orders.",
                    device=models.DeviceContext(
                        platform=models.DevicePlatform.IOS,
                        app_version="4.2.1",
                        locale="de-DE",
                        time_zone="Europe/Berlin",
                    ),
                ),
            )
            .data
        )
        assert (created.device.platform, created.device.app_version) == (
            models.DevicePlatform.IOS,
            "4.2.1",
        )
        assert (created.unread_count, created.last_read_message_id, created.rating) == (
            0,
            None,
            None,
        )

        reply = api("admin.admin_reply_to_support_request")
        reply.sync(created.id, client=staff, body=models.AdminReply(body="Update to 4.2.2."))
        noted = reply.sync(
            created.id,
            client=staff,
            body=models.AdminReply(body="Known crash, fixed in 4.2.2.", internal=True),
        ).data
        assert [m.internal for m in noted.messages] == [False, False, True]
        tagged = (
            api("admin.admin_update_support_request")
            .sync(created.id, client=staff, body=models.AdminUpdate(tags=["ios", "crash"]))
            .data
        )
        assert tagged.tags == ["crash", "ios"]

        badge = api("mobile.get_unread_count").sync(client=me).data
        assert (badge.unread_count, badge.requests_with_unread) == (1, 1)
        detail = api("mobile.get_support_request").sync(created.id, client=me).data
        assert [m.author_type.value for m in detail.messages] == ["customer", "admin"]
        assert detail.unread_count == 1
        state = (
            api("mobile.mark_support_request_read")
            .sync(created.id, client=me, body=models.MarkRead())
            .data
        )
        assert (state.last_read_message_id, state.unread_count) == (detail.messages[-1].id, 0)
        assert api("mobile.get_unread_count").sync(client=me).data.unread_count == 0
        seen = api("admin.admin_get_support_request").sync(created.id, client=staff).data
        assert seen.customer_last_read_message_id == detail.messages[-1].id

        stats = api("admin.get_support_stats").sync(client=staff).data
        assert stats.opened >= 1 and stats.backlog.in_progress >= 1


# -- Kotlin and Swift, through openapi-generator -------------------------------------------


@pytest.fixture(scope="module")
def served_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The live server's ``/openapi.json``, saved for the generator."""
    require_tool(shutil.which("java") is not None, "java", "install a JRE (openapi-generator-cli)")
    directory = tmp_path_factory.mktemp("openapi-generator")
    settings = Settings(
        database_url=f"sqlite:///{directory / 'support.db'}",
        jwt_secret=b"k" * 32,
        data_dir=directory,
    )
    with app_in_thread(create_app(settings)) as base_url:
        spec = httpx.get(f"{base_url}/openapi.json", timeout=30).text
    path = directory / "support_requests.openapi.json"
    path.write_text(spec)
    return path


def _generator(*arguments: str | Path, cwd: Path) -> str:
    return _run(BIN / "openapi-generator-cli", *arguments, cwd=cwd)


def _complaints(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if (" WARN " in line or " ERROR " in line)
        and not any(notice in line for notice in GENERATOR_NOTICES)
    ]


def test_openapi_generator_finds_no_issue(served_spec: Path) -> None:
    output = _generator("validate", "-i", served_spec, cwd=served_spec.parent)
    assert "No validation issues detected." in output, output
    assert _complaints(output) == []


@pytest.mark.parametrize(
    ("generator", "api_file"),
    [
        ("kotlin", "src/main/kotlin/org/openapitools/client/apis/MobileApi.kt"),
        ("swift5", "OpenAPIClient/Classes/OpenAPIs/APIs/MobileAPI.swift"),
        ("typescript-fetch", "apis/MobileApi.ts"),
    ],
)
def test_mobile_clients_generate_without_warnings_and_name_methods_after_the_verbs(
    served_spec: Path, tmp_path: Path, generator: str, api_file: str
) -> None:
    output = _generator(
        "generate", "-g", generator, "-i", served_spec, "-o", tmp_path / generator, cwd=tmp_path
    )
    assert _complaints(output) == []
    source = (tmp_path / generator / api_file).read_text()
    for path in ("/api/mobile/support-requests", "/api/mobile/support-requests/{id}/messages"):
        assert path in source
    assert re.search(r"\bcreateSupportRequest\b", source), "method named after the operation id"
    generated = [p for p in (tmp_path / generator).rglob("*") if p.is_file()]
    named = [str(p.relative_to(tmp_path)) for p in generated if "handlers" in p.name.lower()]
    assert named == []
    mentions = [str(p) for p in generated if _HANDLER_NAME.search(p.read_text(errors="replace"))]
    assert mentions == []


def test_the_generated_python_client_names_no_handlers(python_client: ModuleType) -> None:
    root = Path(python_client.__file__).parent
    names = [str(p.relative_to(root)) for p in root.rglob("*.py")]
    assert "api/mobile/create_support_request.py" in names
    assert [name for name in names if "handlers" in name] == []
    assert [n for n in names if _HANDLER_NAME.search((root / n).read_text())] == []
