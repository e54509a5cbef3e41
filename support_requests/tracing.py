"""Traces with OpenTelemetry, only when asked for.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (spans go there over OTLP/HTTP, configured
by the standard ``OTEL_*`` variables: headers, service name, sampler) or when
``SUPPORT_OTEL=console`` (spans printed on stdout, for a look on a laptop). Off, nothing
of OpenTelemetry is imported and no middleware or span code runs: the request path is
the same as without this module.

What is traced: a span per request (``Tracing``), named by its operation id, with the
request id, method, route and status as attributes and the caller's ``traceparent``
honoured; inside it a span per database scope (``db.read``, ``db.write``: one
transaction, or one statement group, each); and a span per webhook delivery.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Tracer

SERVICE_NAME = "support-requests"


def mode_from_environment(env: Mapping[str, str] | None = None) -> str | None:
    """``otlp``, ``console``, or None (off), from the environment."""
    env = os.environ if env is None else env
    chosen = (env.get("SUPPORT_OTEL") or "").strip().lower()
    if chosen in ("off", "0", "none"):
        return None
    if chosen in ("console", "otlp"):
        return chosen
    if chosen:
        raise ValueError(f"SUPPORT_OTEL must be console, otlp or off (got {chosen!r})")
    return "otlp" if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") else None


@dataclass(frozen=True)
class Traces:
    """The tracer spans are made with, and the provider that exports them."""

    tracer: Tracer
    provider: TracerProvider

    def shut_down(self) -> None:
        """Export what is still batched (the app's shutdown)."""
        self.provider.shutdown()


def traces_for(mode: str | None, processor: SpanProcessor | None = None) -> Traces | None:
    """Traces exported as ``mode`` says (or to ``processor``: tests give one with an
    in-memory exporter), or None when tracing is off. Imports OpenTelemetry only here."""
    if mode is None and processor is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    if processor is not None:
        provider.add_span_processor(processor)
    elif mode == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Traces(provider.get_tracer("support_requests"), provider)


@contextmanager
def span(tracer: Tracer | None, name: str, **attributes: Any) -> Iterator[None]:
    """A child span of the current one, when tracing is on."""
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name, attributes=attributes):
        yield


class Tracing:
    """Outermost middleware, only in the stack when tracing is on: one span per request,
    named by the operation id once the router has matched it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer: Tracer,
        operation_of: Any,
        request_id_of: Any,
        route_of: Any,
    ) -> None:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.app = app
        self.tracer = tracer
        self.operation_of = operation_of
        self.request_id_of = request_id_of
        self.route_of = route_of
        self._extract = propagate.extract
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)
        self._status = Status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = dict(Headers(scope=scope).items())
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}",
            context=self._extract(carrier),
            kind=self._server,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        ) as current:
            try:
                await self.app(scope, receive, send_status)
            finally:
                operation = self.operation_of(scope)
                if operation:
                    current.update_name(operation)
                    current.set_attribute("support.operation_id", operation)
                route = self.route_of(operation)
                if route:
                    current.set_attribute("http.route", route)
                request_id = self.request_id_of(scope)
                if request_id:
                    current.set_attribute("support.request_id", request_id)
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    current.set_status(self._error)
