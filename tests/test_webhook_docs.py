"""docs/webhooks.md's verification snippets work: run against deliveries signed by the
``standardwebhooks`` Python library (the service's signer).

The snippets are the fenced blocks marked ``title=…`` under "Verifying a delivery":
``verify.py`` and ``app.py`` run here (the app through httpx's ASGI transport);
``verify.js`` runs under ``node`` with the npm ``standardwebhooks`` package from
``npm ci``; ``server.js`` (Express, not installed) is checked for syntax only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from support_requests.webhooks.secrets import new_secret
from tests.helpers import require_tool, signed_delivery

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "webhooks.md"
NODE_MODULES = ROOT / "node_modules"
SECTION = "## Verifying a delivery"
_SNIPPET = re.compile(r"^```(\w+) title=(\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
BODY = json.dumps(
    {
        "type": "support_request.status_changed",
        "timestamp": "2026-12-06T10:00:00.000Z",
        "data": {"requestId": 7, "customerId": "alice", "from": "open", "to": "resolved"},
    }
)
# What each case of ``_cases`` verifies to: the event, or nothing.
VERIFIED_ONLY_THE_VALID_ONE = {
    "valid": json.loads(BODY),
    "tampered body": None,
    "another secret": None,
    "stale timestamp": None,
    "no signature": None,
}
# Runs verify.js's verifiedEvent on each case read from stdin; prints the results as JSON.
NODE_RUNNER = """
const { verifiedEvent } = require("./verify.js");
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
const results = cases.map((c) => verifiedEvent(c.secret, Buffer.from(c.body), c.headers));
process.stdout.write(JSON.stringify(results));
"""


def snippets() -> dict[str, str]:
    """The section's titled code blocks, by file name."""
    text = PAGE.read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return {name: code for _, name, code in _SNIPPET.findall(section)}


@pytest.fixture
def snippet_dir(tmp_path: Path) -> Path:
    for name, code in snippets().items():
        (tmp_path / name).write_text(code)
    return tmp_path


def _module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def verify_py(snippet_dir: Path) -> Iterator[ModuleType]:
    """verify.py, importable as ``verify`` (app.py imports it so)."""
    yield _module(snippet_dir / "verify.py", "verify")
    sys.modules.pop("verify", None)


def _cases(secret: str) -> list[tuple[str, str, dict[str, str]]]:
    """(what, body, headers): one delivery that verifies, then ones that must not."""
    signed = signed_delivery(secret, BODY)
    stale = datetime.now(UTC) - timedelta(minutes=6)
    return [
        ("valid", BODY, signed),
        ("tampered body", BODY.replace("resolved", "closed"), signed),
        ("another secret", BODY, signed_delivery(new_secret(), BODY)),
        ("stale timestamp", BODY, signed_delivery(secret, BODY, at=stale)),
        ("no signature", BODY, {k: v for k, v in signed.items() if k != "webhook-signature"}),
    ]


def test_the_section_has_the_python_and_node_snippets() -> None:
    assert set(snippets()) == {"verify.py", "app.py", "verify.js", "server.js"}


def test_the_python_snippet_verifies_a_signed_delivery_and_refuses_a_tampered_one(
    verify_py: ModuleType,
) -> None:
    secret = new_secret()
    results = {
        what: verify_py.verified_event(secret, body.encode(), headers)
        for what, body, headers in _cases(secret)
    }
    assert results == VERIFIED_ONLY_THE_VALID_ONE


def test_the_python_endpoint_answers_204_once_per_webhook_id_and_401_to_a_forgery(
    verify_py: ModuleType, snippet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = new_secret()
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    endpoint = _module(snippet_dir / "app.py", "webhook_docs_app")
    handled: list[Any] = []
    monkeypatch.setattr(endpoint, "handle", handled.append)
    signed = signed_delivery(secret, BODY)
    forged = signed_delivery(new_secret(), BODY)

    async def deliver() -> list[int]:
        transport = httpx.ASGITransport(app=endpoint.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
            answers = [
                await client.post("/webhooks/support", content=BODY, headers=headers)
                for headers in (signed, signed, forged)
            ]
        return [answer.status_code for answer in answers]

    try:
        assert asyncio.run(deliver()) == [204, 204, 401]
    finally:
        sys.modules.pop("webhook_docs_app", None)
    assert handled == [json.loads(BODY)]


def _node() -> str:
    node = shutil.which("node")
    require_tool(node is not None, "node", "install Node.js (and run npm ci)")
    assert node is not None
    require_tool(
        (NODE_MODULES / "standardwebhooks").is_dir(), "standardwebhooks (npm)", "run npm ci"
    )
    return node


def test_the_node_snippet_verifies_a_signed_delivery_and_refuses_a_tampered_one(
    snippet_dir: Path,
) -> None:
    node = _node()
    secret = new_secret()
    cases = _cases(secret)
    (snippet_dir / "run.js").write_text(NODE_RUNNER)
    completed = subprocess.run(
        [node, "run.js"],
        cwd=snippet_dir,
        env={"NODE_PATH": str(NODE_MODULES), "PATH": str(Path(node).parent)},
        input=json.dumps([{"secret": secret, "body": b, "headers": h} for _, b, h in cases]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    results = dict(zip([what for what, _, _ in cases], json.loads(completed.stdout), strict=True))
    assert results == VERIFIED_ONLY_THE_VALID_ONE


def test_the_express_snippet_is_valid_javascript(snippet_dir: Path) -> None:
    completed = subprocess.run(
        [_node(), "--check", "server.js"],
        cwd=snippet_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
