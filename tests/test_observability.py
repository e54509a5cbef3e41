"""Request ids and the structured access log."""

from __future__ import annotations

import json
import logging
import re

import pytest

from support_requests.handlers.observability import JsonLogFormatter
from tests.helpers import MOBILE, create, customer, mint

ACCESS = "support_requests.access"


def _access_records(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [r.fields for r in caplog.records if r.name == ACCESS]


def test_a_request_id_is_generated_and_echoed(client):
    response = client.get(MOBILE, headers=customer())
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_a_sane_client_request_id_is_kept(client):
    response = client.get(MOBILE, headers={**customer(), "X-Request-ID": "mobile-42.abc"})
    assert response.headers["x-request-id"] == "mobile-42.abc"


@pytest.mark.parametrize("offered", ["has space", "x" * 129, "tab\there"])
def test_an_unusable_client_request_id_is_replaced(client, offered):
    response = client.get(MOBILE, headers={**customer(), "X-Request-ID": offered})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_problem_bodies_carry_the_request_id(client):
    response = client.get(f"{MOBILE}/12345", headers={**customer(), "X-Request-ID": "trace-1"})
    assert response.status_code == 404
    assert response.json()["requestId"] == "trace-1"
    assert int(response.headers["content-length"]) == len(response.content)


def test_one_access_line_per_request_without_token_or_body(client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS)
    token = mint("log-subject", name="Alex")
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "req-7"}
    created = create(client, headers, message="a very private message body")
    caplog.clear()
    client.get(f"{MOBILE}/{created['id']}", headers=headers)
    [line] = _access_records(caplog)
    assert line["requestId"] == "req-7"
    assert line["method"] == "GET"
    assert line["route"] == "/api/mobile/support-requests/{id}"
    assert line["status"] == 200
    assert line["durationMs"] >= 0
    assert line["sub"] == "log-subject"
    text = " ".join(json.dumps(r.fields) + r.getMessage() for r in caplog.records)
    assert token not in text and "private message" not in text


def test_failed_requests_are_logged_with_their_status(client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS)
    client.get(MOBILE)
    [line] = _access_records(caplog)
    assert line["status"] == 401
    assert line["sub"] is None


def test_the_log_formatter_writes_one_json_object_per_line():
    record = logging.LogRecord(ACCESS, logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"requestId": "r1", "status": 200}
    line = JsonLogFormatter().format(record)
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed["requestId"] == "r1" and parsed["status"] == 200
    assert parsed["level"] == "info" and parsed["message"] == "request"
