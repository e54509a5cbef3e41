"""OpenTelemetry traces: a span per request named by its operation id, database scopes as
its children, the caller's traceparent honoured; nothing loaded when tracing is off."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import ConfigurationError, Settings
from tests.helpers import MOBILE, create, customer
from tests.servers import (
    clean_environment,
    migrated_database,
    server_environment,
    supportctl_server,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def traced(settings: Settings) -> tuple[object, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    app = create_app(settings, span_processor=SimpleSpanProcessor(exporter))
    return app, exporter


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def test_each_request_is_a_span_named_by_its_operation_id(settings):
    alice = customer()
    app, exporter = traced(settings)
    with app.test_client() as client:  # type: ignore[attr-defined]
        created = create(client, alice)
        response = client.get(f"{MOBILE}/{created['id']}", headers=alice)
    (span,) = by_name(exporter.get_finished_spans(), "getSupportRequest")
    attributes = dict(span.attributes or {})
    assert attributes["support.request_id"] == response.headers["X-Request-ID"]
    assert attributes["http.route"] == "/api/mobile/support-requests/{id}"
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.request.method"] == "GET"
    assert len(by_name(exporter.get_finished_spans(), "createSupportRequest")) == 1


def test_database_scopes_are_child_spans_of_the_request(settings):
    alice = customer()
    app, exporter = traced(settings)
    with app.test_client() as client:  # type: ignore[attr-defined]
        create(client, alice)
    spans = exporter.get_finished_spans()
    (request,) = by_name(spans, "createSupportRequest")
    writes = [
        span
        for span in by_name(spans, "db.write")
        if span.parent is not None and span.parent.span_id == request.context.span_id
    ]
    assert writes, [(s.name, s.parent) for s in spans]
    system = "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"
    assert {dict(span.attributes or {})["db.system"] for span in writes} == {system}


def test_the_callers_traceparent_is_honoured(settings):
    app, exporter = traced(settings)
    with app.test_client() as client:  # type: ignore[attr-defined]
        client.get(MOBILE, headers={**customer(), "traceparent": TRACEPARENT})
    (span,) = by_name(exporter.get_finished_spans(), "listSupportRequests")
    assert format(span.context.trace_id, "032x") == TRACE_ID


def test_a_server_error_marks_the_span_as_an_error(settings, monkeypatch):
    from support_requests.storage.support_desk import SupportDesk

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(SupportDesk, "list_for_customer", broken)
    app, exporter = traced(settings)
    with app.test_client(raise_server_exceptions=False) as client:  # type: ignore[attr-defined]
        assert client.get(MOBILE, headers=customer()).status_code == 500
    (span,) = by_name(exporter.get_finished_spans(), "listSupportRequests")
    assert not span.status.is_ok


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, None),
        ({"SUPPORT_OTEL": "console"}, "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "SUPPORT_OTEL": "off"}, None),
    ],
)
def test_tracing_is_on_only_when_configured(env, mode, tmp_path):
    environment = {"SUPPORT_DATA_DIR": str(tmp_path), **env}
    assert Settings.from_env(environment).tracing == mode


def test_an_unknown_tracing_mode_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigurationError, match="SUPPORT_OTEL"):
        Settings.from_env({"SUPPORT_DATA_DIR": str(tmp_path), "SUPPORT_OTEL": "zipkin"})


def test_tracing_off_loads_nothing_of_opentelemetry(tmp_path):
    script = (
        "import sys\n"
        "from support_requests.handlers.app import create_app\n"
        "from support_requests.handlers.settings import Settings\n"
        f"app = create_app(Settings.from_env({{'SUPPORT_DATA_DIR': {str(tmp_path)!r}}}))\n"
        "with app.test_client() as client:\n"
        "    assert client.get('/healthz').status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stderr


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A real OTLP/HTTP endpoint on 127.0.0.1 that keeps every body posted to it."""
    received: list[tuple[str, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append((self.path, self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_supportctl_serve_exports_spans_over_otlp(tmp_path: Path, otlp_receiver) -> None:
    endpoint, received = otlp_receiver
    url = f"sqlite:///{tmp_path / 'traced.db'}"
    migrated_database(url)
    env = server_environment(url, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    with supportctl_server(env, tmp_path) as server:
        response = httpx.get(f"{server.url}{MOBILE}", headers=customer(), timeout=10)
        assert response.status_code == 200
    # The server flushed its batch on shutdown, as protobuf to /v1/traces.
    paths = {path for path, _ in received}
    assert paths == {"/v1/traces"}, received
    body = b"".join(payload for _, payload in received)
    assert b"listSupportRequests" in body
    assert response.headers["X-Request-ID"].encode() in body
