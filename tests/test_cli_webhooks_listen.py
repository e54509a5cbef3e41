"""``supportctl webhooks listen``: verifies each delivery with standardwebhooks, prints it.

The process tests start the command as QA does and POST bodies signed by the
``standardwebhooks`` library (the service's signer); the others run the receiver in
this process through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from support_requests.cli.main import app as supportctl
from support_requests.webhooks.listen import (
    MAX_BODY_BYTES,
    Listener,
    Receipt,
    summary,
    webhook_for,
)
from support_requests.webhooks.secrets import new_secret
from tests.helpers import signed_delivery
from tests.servers import Server, clean_environment, webhook_listener

PRINT_TIMEOUT = 10.0


def _event(kind: str = "support_request.status_changed", **data: Any) -> str:
    fields = {"requestId": 12, "customerId": "alice", "from": "open", "to": "resolved", **data}
    document = {"type": kind, "timestamp": "2026-12-06T10:00:00.000Z", "data": fields}
    return json.dumps(document)


def _printed(read: Any, text: str) -> str:
    """What ``read()`` returns once it contains ``text`` (the process prints as it receives)."""
    deadline = time.monotonic() + PRINT_TIMEOUT
    while text not in (output := read()):
        assert time.monotonic() < deadline, f"{text!r} was not printed:\n{output}"
        time.sleep(0.05)
    return str(output)


def _line_with(output: str, text: str) -> str:
    return next(line for line in output.splitlines() if text in line)


def _listener(tmp_path: Path, *args: str, **env: str) -> Any:
    return webhook_listener(clean_environment(**env), tmp_path, *args)


def _post(server: Server, body: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/hooks/support", content=body, headers=headers, timeout=5.0)


def _assert_refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["type"], problem["title"], problem["status"]) == (
        "about:blank",
        "Unauthorized",
        401,
    )
    assert reason in problem["detail"]


# -- the command, as a process ---------------------------------------------------------------


@pytest.mark.slow
def test_a_signed_delivery_is_answered_204_and_printed_as_one_line(tmp_path: Path) -> None:
    secret = new_secret()
    body = _event()
    with _listener(tmp_path, "--secret", secret) as server:
        response = _post(server, body, signed_delivery(secret, body, webhook_id="evt_first"))
        output = _printed(server.log, "evt_first")
    assert (response.status_code, response.content) == (204, b"")
    line = _line_with(output, "evt_first")
    assert "support_request.status_changed" in line
    assert "request 12" in line
    assert "open -> resolved" in line
    assert "refused" not in output
    assert f"Listening on {server.url}/" in " ".join(server.errors().split())


@pytest.mark.slow
def test_a_bad_signature_is_answered_401_and_printed_as_a_refusal(tmp_path: Path) -> None:
    secret = new_secret()
    body = _event()
    with _listener(tmp_path, "--secret", secret) as server:
        signed_by_another = signed_delivery(new_secret(), body, webhook_id="evt_forged")
        tampered = signed_delivery(secret, body, webhook_id="evt_tampered")
        forged = _post(server, body, signed_by_another)
        changed = _post(server, body.replace("resolved", "closed"), tampered)
        output = _printed(server.log, "evt_tampered")
    for response in (forged, changed):
        _assert_refused(response, "No matching signature found")
    for webhook_id in ("evt_forged", "evt_tampered"):
        assert "refused (401): No matching signature found" in _line_with(output, webhook_id)
    assert "support_request.status_changed" not in output


@pytest.mark.slow
def test_a_refusal_is_printed_in_red_where_colour_is_on(tmp_path: Path) -> None:
    secret = new_secret()
    body = _event()
    with _listener(tmp_path, "--secret", secret, FORCE_COLOR="1") as server:
        _post(server, body, signed_delivery(secret, body, webhook_id="evt_good"))
        _post(server, body, signed_delivery(new_secret(), body, webhook_id="evt_bad"))
        output = _printed(server.log, "No matching signature found")
    bold_red = "\x1b[1;31m"
    assert f"{bold_red}refused (401): No matching signature found" in output
    assert bold_red not in _line_with(output, "evt_good")


@pytest.mark.slow
def test_a_stale_timestamp_is_answered_401(tmp_path: Path) -> None:
    secret = new_secret()
    body = _event()
    six_minutes_ago = datetime.now(UTC) - timedelta(minutes=6)
    with _listener(tmp_path, "--secret", secret) as server:
        stale = signed_delivery(secret, body, webhook_id="evt_stale", at=six_minutes_ago)
        response = _post(server, body, stale)
        output = _printed(server.log, "evt_stale")
    _assert_refused(response, "Message timestamp too old")
    assert "refused (401): Message timestamp too old" in _line_with(output, "evt_stale")


@pytest.mark.slow
def test_json_prints_each_verified_body_as_one_json_line(tmp_path: Path) -> None:
    secret = new_secret()
    bodies = [_event(), _event("support_request.rated", score=5)]
    with _listener(tmp_path, "--secret", secret, "--json") as server:
        answers = [_post(server, body, signed_delivery(secret, body)) for body in bodies]
        refused = _post(server, bodies[0], signed_delivery(new_secret(), bodies[0]))
        _printed(server.log, '"support_request.rated"')
        errors = _printed(server.errors, "refused (401)")
    assert [response.status_code for response in answers] == [204, 204]
    assert refused.status_code == 401
    lines = server.log().splitlines()
    assert [json.loads(line) for line in lines] == [json.loads(body) for body in bodies]
    assert lines == bodies
    assert "No matching signature found" in errors


@pytest.mark.slow
def test_status_makes_the_listener_answer_that_status_to_verified_deliveries(
    tmp_path: Path,
) -> None:
    secret = new_secret()
    body = _event()
    with _listener(tmp_path, "--secret", secret, "--status", "500") as server:
        verified = _post(server, body, signed_delivery(secret, body, webhook_id="evt_retry"))
        forged = _post(server, body, signed_delivery(new_secret(), body))
        output = _printed(server.log, "refused")
    assert (verified.status_code, verified.content) == (500, b"")
    _assert_refused(forged, "No matching signature found")
    assert "support_request.status_changed" in _line_with(output, "evt_retry")
    assert "answering 500 (--status)" in " ".join(server.errors().split())


@pytest.mark.slow
def test_ctrl_c_stops_the_listener_and_exits_0(tmp_path: Path) -> None:
    with _listener(tmp_path, "--secret", new_secret()) as server:
        os.killpg(server.process.pid, signal.SIGINT)
        code = server.process.wait(timeout=10)
        errors = server.errors()
    assert code == 0, errors
    assert "Stopped." in errors
    assert "Traceback" not in errors + server.log()


# -- usage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_", "plain words"])
def test_a_secret_that_is_not_a_signing_secret_is_a_usage_error(secret: str) -> None:
    result = CliRunner().invoke(supportctl, ["webhooks", "listen", "--secret", secret])
    assert result.exit_code == 2
    assert "not a webhook signing secret" in " ".join(result.output.split())


def test_a_status_outside_200_to_599_is_a_usage_error() -> None:
    args = ["webhooks", "listen", "--secret", new_secret(), "--status", "101"]
    result = CliRunner().invoke(supportctl, args)
    assert result.exit_code == 2


# -- the receiver, in this process -----------------------------------------------------------


def _send(listener: Listener, method: str, content: bytes, headers: dict[str, str]) -> Any:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=listener)
        async with httpx.AsyncClient(transport=transport, base_url="http://listener") as client:
            return await client.request(method, "/", content=content, headers=headers)

    return asyncio.run(send())


def _receiver() -> tuple[str, Listener, list[Receipt]]:
    secret = new_secret()
    receipts: list[Receipt] = []
    return secret, Listener(webhook_for(secret), receipts.append), receipts


def test_a_verified_delivery_hands_the_parsed_event_to_the_printer() -> None:
    secret, listener, receipts = _receiver()
    body = _event()
    response = _send(listener, "POST", body.encode(), signed_delivery(secret, body, webhook_id="e"))
    assert (response.status_code, response.content) == (204, b"")
    [receipt] = receipts
    assert (receipt.verified, receipt.webhook_id, receipt.body) == (True, "e", body.encode())
    assert receipt.event == json.loads(body)


def test_a_request_without_the_signature_headers_is_refused() -> None:
    _, listener, receipts = _receiver()
    response = _send(listener, "POST", _event().encode(), {"content-type": "application/json"})
    assert response.status_code == 401
    assert "Missing required headers" in response.json()["detail"]
    assert [(r.verified, r.refusal, r.webhook_id) for r in receipts] == [
        (False, "Missing required headers", None)
    ]


def test_only_post_is_a_delivery() -> None:
    _, listener, receipts = _receiver()
    response = _send(listener, "GET", b"", {})
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert response.json()["title"] == "Method Not Allowed"
    assert receipts == []


def test_a_body_over_1_mib_is_413_and_not_verified() -> None:
    secret, listener, receipts = _receiver()
    body = "x" * (MAX_BODY_BYTES + 1)
    response = _send(listener, "POST", body.encode(), signed_delivery(secret, body))
    assert response.status_code == 413
    assert response.json()["title"] == "Content Too Large"
    assert receipts == []


def test_a_verified_body_that_is_not_json_is_still_answered() -> None:
    secret, listener, receipts = _receiver()
    response = _send(listener, "POST", b"plain", signed_delivery(secret, "plain"))
    assert response.status_code == 204
    assert [(r.verified, r.event, r.body) for r in receipts] == [(True, None, b"plain")]


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (
            "support_request.created",
            {"category": "payment", "subject": "Refund"},
            "[payment] Refund",
        ),
        (
            "support_request.message_created",
            {"message": {"authorType": "admin", "body": "We  are\non it."}},
            "admin: We are on it.",
        ),
        ("support_request.status_changed", {"from": "open", "to": "closed"}, "open -> closed"),
        ("support_request.assigned", {"from": None, "to": "a-uuid"}, "- -> a-uuid"),
        ("support_request.rated", {"score": 4}, "score 4"),
        (
            "notification.push",
            {"devices": [{"id": 1}, {"id": 2}], "notification": {"body": "Hello"}},
            "to 2 devices: Hello",
        ),
        ("webhook.ping", {}, ""),
        ("something.new", {"attachmentId": "att_1"}, '{"attachmentId":"att_1"}'),
    ],
)
def test_each_event_type_has_a_short_summary(
    kind: str, data: dict[str, Any], expected: str
) -> None:
    event = {"type": kind, "data": {"requestId": 1, "customerId": "c", **data}}
    assert summary(event) == expected


def test_a_long_summary_is_cut_to_one_short_line() -> None:
    message = {"authorType": "customer", "body": "word " * 100}
    text = summary({"type": "support_request.message_created", "data": {"message": message}})
    assert len(text) == 60
    assert text.endswith("…")
