"""The served Swagger UI (``/ui/``) loads in headless Chromium and shows every operation.

Chromium comes from Debian's ``chromium`` package (CI installs it); without it these tests
skip, except under CI where a missing browser is a failure. The browser may reach nothing
but the loopback test server.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.openapi import SPEC_PATH
from tests.helpers import SECRET, require_tool
from tests.servers import app_in_thread

pytestmark = pytest.mark.slow

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def ui_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_tool(CHROMIUM is not None, "chromium", "apt-get install -y chromium")
    data_dir = tmp_path_factory.mktemp("swagger-ui")
    settings = Settings(
        database_url=f"sqlite:///{data_dir / 'support.db'}",
        jwt_secret=SECRET.encode(),
        data_dir=data_dir,
    )
    with app_in_thread(create_app(settings)) as base_url:
        yield f"{base_url}/ui/"


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Nothing but the loopback test server resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
    ]
    result = subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


class _Operations(HTMLParser):
    """Swagger UI's operation blocks: (tag, operationId, METHOD, path) for each."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[tuple[str, str, str, str]] = set()
        self._open: tuple[str, str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        classes = attributes.get("class", "").split()
        element_id = attributes.get("id", "").replace("\\", "")
        if "opblock" in classes and element_id.startswith("operations-"):
            method = next(c.removeprefix("opblock-") for c in classes if c[8:] in METHODS)
            api_tag, operation_id = element_id.removeprefix("operations-").split("-", 1)
            self._open = (api_tag, operation_id, method.upper())
        elif "data-path" in attributes and self._open is not None:
            self.found.add((*self._open, attributes["data-path"]))
            self._open = None


def _expected() -> set[tuple[str, str, str, str]]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return {
        (operation["tags"][0], operation["operationId"], method.upper(), path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_swagger_ui_lists_every_operation(ui_url: str, tmp_path: Path) -> None:
    dom = chromium(tmp_path / "profile", "--dump-dom", ui_url).stdout.decode()
    assert "Support Requests API" in dom
    parser = _Operations()
    parser.feed(dom)
    assert parser.found == _expected()


def test_swagger_ui_renders_a_screenshot(ui_url: str, tmp_path: Path) -> None:
    screenshot = tmp_path / "swagger-ui.png"
    chromium(tmp_path / "profile", "--window-size=1280,2400", f"--screenshot={screenshot}", ui_url)
    image = screenshot.read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    # A rendered page of operations, not a blank or error page (those are a few KiB).
    assert len(image) > 100_000, len(image)
