"""The app factory: the spec drives routing, validation and security.

``create_app(settings)`` builds everything from its argument; nothing reads
the environment or connects at import time. ``app_from_environment`` is the
uvicorn factory that reads ``SUPPORT_*`` once, at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import gc
import inspect
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import yaml
from connexion import AsyncApp
from connexion.middleware import ConnexionMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.request_validation import RequestValidationMiddleware
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from support_requests import tracing
from support_requests.domain.clock import now_ms
from support_requests.framework.connexion_operations import PreparedAsyncApp
from support_requests.framework.connexion_validation import RequestValidation
from support_requests.framework.routing import ContractRoutingMiddleware
from support_requests.framework.swagger_ui import SpecAsWritten
from support_requests.handlers import conditional, problems
from support_requests.handlers.attachments import Uploads, too_large
from support_requests.handlers.auth import TokenVerifier, bearer_security
from support_requests.handlers.limits import RateLimit
from support_requests.handlers.monitoring import MetricsEndpoint
from support_requests.handlers.observability import (
    RequestContext,
    configure_logging,
    operation_of,
    request_id_of,
)
from support_requests.handlers.operations import OPERATIONS
from support_requests.handlers.render import ATTACHMENT_PATHS
from support_requests.handlers.settings import Settings
from support_requests.handlers.validation import VALIDATOR_MAP
from support_requests.openapi import SPEC_PATH
from support_requests.storage import schema
from support_requests.storage.attachments import AttachmentStore
from support_requests.storage.customers import CustomerData
from support_requests.storage.database import Database
from support_requests.storage.devices import DeviceRegistry
from support_requests.storage.idempotency import IdempotencyStore
from support_requests.storage.rate_limits import Limit, RateLimiter
from support_requests.storage.stats import SupportStatistics
from support_requests.storage.support_desk import SupportDesk
from support_requests.storage.webhooks import WebhookEndpoints
from support_requests.webhooks.addresses import Lookup, system_lookup
from support_requests.webhooks.secrets import SecretBox
from support_requests.webhooks.worker import running_worker

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
UPLOAD_PATHS = frozenset(ATTACHMENT_PATHS.values())
# Room for the part's headers and the boundaries around the file's bytes.
MULTIPART_FRAMING_BYTES = 16 * 1024


class BodyLimit:
    """413 for a body over 64 KiB (an upload: over ``upload_bytes`` plus the multipart
    framing), by ``Content-Length`` or by counting what arrives, so nothing past the limit
    is read."""

    def __init__(self, app: ASGIApp, upload_bytes: int) -> None:
        self.app = app
        self.upload_bytes = upload_bytes

    def _limit(self, scope: Scope) -> tuple[int, Callable[[], problems.HttpProblem]]:
        if scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS:
            return self.upload_bytes + MULTIPART_FRAMING_BYTES, self._upload_too_large
        return MAX_BODY_BYTES, _too_large

    def _upload_too_large(self) -> problems.HttpProblem:
        return too_large(self.upload_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, refusal = self._limit(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and not declared.isdigit():
            raise problems.HttpProblem(
                400, "malformed_body", "Content-Length is not a number of bytes."
            )
        if declared is not None and int(declared) > limit:
            raise refusal()
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise refusal()
            return message

        if declared is None and "transfer-encoding" in Headers(scope=scope):
            # Connexion reads no body without Content-Length: buffer a chunked one, declare it.
            scope, buffered_receive = await _buffered(scope, counting_receive)
            await self.app(scope, buffered_receive, send)
            return
        await self.app(scope, counting_receive, send)


async def _buffered(scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
    """The whole (already size-limited) body read up front, replayed with its length."""
    chunks: list[bytes] = []
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    body = b"".join(chunks)
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"transfer-encoding"]
    headers.append((b"content-length", str(len(body)).encode()))
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return {**scope, "headers": headers}, replay


def _too_large() -> problems.HttpProblem:
    return problems.HttpProblem(
        413, "payload_too_large", f"The body is larger than {MAX_BODY_BYTES // 1024} KiB."
    )


class ResponseHeaders:
    """Headers every response gets: no caching of authenticated data, no sniffing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _bound(middleware: type, **options: Any) -> type:
    """``middleware`` with ``options`` bound, for Connexion's ``middleware(app)`` calls."""

    class Bound(middleware):  # type: ignore[misc]
        def __init__(self, app: ASGIApp) -> None:
            super().__init__(app, **options)

    Bound.__name__ = middleware.__name__
    return Bound


def _middlewares(
    request_context: type,
    metrics_endpoint: type,
    rate_limit: type,
    revalidation: type,
    body_limit: type,
    *,
    validate_responses: bool,
    tracing: type | None = None,
) -> list[Any]:
    """Connexion's stack, with ours: request context and headers outermost (they see every
    response, problems included), ``/metrics`` and the detail polls' 304 right inside the
    problem mapping,
    loose id routing, the body cap, and rate limits right after authentication. Response
    validation is left out when it is off (Connexion's then only passes each request on).
    ``tracing``, when on, is outermost: its span covers everything."""
    stack: list[Any] = [] if tracing is None else [tracing]
    for middleware in ConnexionMiddleware.default_middlewares:
        if middleware is ResponseValidationMiddleware and not validate_responses:
            continue
        if middleware is RoutingMiddleware:
            stack += [ContractRoutingMiddleware, body_limit]
            continue
        if middleware is SwaggerUIMiddleware:
            stack.append(SpecAsWritten)
            continue
        if middleware is RequestValidationMiddleware:
            stack.append(RequestValidation)
            continue
        if middleware is ExceptionMiddleware:
            stack += [request_context, ResponseHeaders, middleware, metrics_endpoint, revalidation]
            continue
        stack.append(middleware)
        if middleware is SecurityMiddleware:
            stack.append(rate_limit)
    return stack


def _routes_by_operation(spec: dict[str, Any]) -> Callable[[str | None], str | None]:
    """The path template an operationId serves, for the access log."""
    routes = {
        operation["operationId"]: template
        for template, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }
    return lambda operation_id: routes.get(operation_id or "")


def _allowed_methods(spec: dict[str, Any]) -> Callable[[str], str]:
    """``Allow`` for a path, from the spec's operations on it."""
    routes: list[tuple[re.Pattern[str], str]] = []
    for template, item in spec["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        methods = [m.upper() for m in item if m in {"get", "post", "put", "patch", "delete"}]
        if "GET" in methods:
            methods.append("HEAD")
        routes.append((re.compile(f"^{pattern}$"), ", ".join(sorted(methods))))

    def allow(path: str) -> str:
        for pattern, methods in routes:
            if pattern.match(path):
                return methods
        return ""

    return allow


def _injecting_resolver(dependencies: dict[str, Any]) -> Resolver:
    """Resolve each operationId to its handler with the services it names bound."""

    def resolve(operation_id: str) -> Callable[..., Any]:
        handler = OPERATIONS[operation_id]
        wanted = inspect.signature(handler).parameters
        bound = functools.partial(
            handler, **{name: dep for name, dep in dependencies.items() if name in wanted}
        )
        # Connexion inspects the handler's signature on every request; a partial's is
        # slow to compute, so it is computed here once.
        bound.__signature__ = inspect.signature(bound)  # type: ignore[attr-defined]
        return bound

    return Resolver(function_resolver=resolve)


@functools.cache
def _parsed_spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec: dict[str, Any] = yaml.load(SPEC_PATH.read_text(), Loader=loader)
    return spec


def load_spec() -> dict[str, Any]:
    """The contract as a fresh dict (parsed once per process)."""
    return copy.deepcopy(_parsed_spec())


def create_app(
    settings: Settings,
    *,
    on_started: Callable[[], None] | None = None,
    clock: Callable[[], datetime] = now_ms,
    span_processor: SpanProcessor | None = None,
    lookup: Lookup = system_lookup,
) -> AsyncApp:
    """The ASGI app for ``settings``; ``on_started`` runs once it is ready to serve; ``clock``
    is the time the lifecycle reads (tests move it); ``span_processor`` receives the
    traces (tests; otherwise ``settings.tracing`` decides); ``lookup`` resolves webhook
    hosts (tests answer without DNS)."""
    spec = load_spec()
    traces = tracing.traces_for(settings.tracing, span_processor)
    database = Database(
        settings.database_url,
        pool_size=settings.pool_size,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        tracer=traces.tracer if traces else None,
    )
    desk = SupportDesk(database, clock)
    attachments = AttachmentStore(database, settings.attachment_dir)
    verifier = TokenVerifier(settings)
    dependencies = {
        "desk": desk,
        "stats": SupportStatistics(database),
        "idempotency": IdempotencyStore(database, ttl_seconds=settings.idempotency_ttl_seconds),
        "database": database,
        "attachments": attachments,
        "uploads": Uploads.create(settings.attachment_max_bytes),
        "expected_revision": None if settings.create_schema else schema.head(),
        "devices": DeviceRegistry(database, clock),
        "customers": CustomerData(database, attachments, clock),
        "webhooks": WebhookEndpoints(
            database,
            SecretBox(settings.secret_key),
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
            lookup=lookup,
            clock=clock,
        ),
    }
    limiter = RateLimiter(settings.redis_url)
    rate_limit = _bound(
        RateLimit,
        limiter=limiter,
        reads=Limit.parse(settings.rate_limit_reads),
        writes=Limit.parse(settings.rate_limit_writes),
    )
    route_of = _routes_by_operation(spec)
    request_context = _bound(RequestContext, route_of=route_of)
    metrics_endpoint = _bound(
        MetricsEndpoint, token=settings.metrics_token, database=database, clock=clock
    )
    revalidation = _bound(
        conditional.Revalidation, spec=spec, desk=desk, verifier=verifier, rate_limit=rate_limit
    )

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if settings.create_schema:
            await database.create_schema()
        else:
            await asyncio.to_thread(
                schema.ensure_current, settings.database_url, initialise_empty=database.is_sqlite
            )
        # The first round before serving: no request's transaction meets it mid-flight.
        await _delete_expired_uploads_once(attachments)
        cleanup = asyncio.create_task(
            _delete_expired_uploads(attachments, settings.attachment_cleanup_seconds)
        )
        if on_started is not None:
            on_started()
        async with (
            running_worker(
                database,
                settings,
                lookup=lookup,
                clock=clock,
                tracer=traces.tracer if traces else None,
            )
            if settings.embedded_worker
            else contextlib.nullcontext()
        ):
            yield
        cleanup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cleanup
        await database.dispose()
        limiter.close()
        if traces is not None:
            traces.shut_down()

    app = PreparedAsyncApp(
        __name__,
        lifespan=lifespan,
        middlewares=_middlewares(
            request_context,
            metrics_endpoint,
            rate_limit,
            revalidation,
            _bound(BodyLimit, upload_bytes=settings.attachment_max_bytes),
            validate_responses=settings.validate_responses,
            tracing=None
            if traces is None
            else _bound(
                tracing.Tracing,
                tracer=traces.tracer,
                operation_of=operation_of,
                request_id_of=request_id_of,
                route_of=route_of,
            ),
        ),
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/ui"),
    )
    app.add_api(
        spec,
        resolver=_injecting_resolver(dependencies),
        validator_map=VALIDATOR_MAP,
        security_map={"bearer": bearer_security(verifier)},
        strict_validation=True,
        validate_responses=settings.validate_responses,
        pythonic_params=True,
    )
    problems.register(app, _allowed_methods(spec))
    return app


async def _delete_expired_uploads(attachments: AttachmentStore, every_seconds: float) -> None:
    """Uploads never attached are deleted once expired: every ``every_seconds`` after the
    round at start (``_delete_expired_uploads_once``), off every request's path."""
    while True:
        await asyncio.sleep(every_seconds)
        await _delete_expired_uploads_once(attachments)


async def _delete_expired_uploads_once(attachments: AttachmentStore) -> None:
    """One round of the cleanup; a failed one is logged and left to the next."""
    try:
        deleted = await attachments.delete_expired()
    except Exception:
        logger.exception("deleting expired uploads failed; retrying later")
    else:
        if deleted:
            logger.info("deleted %d expired uploads", deleted)


def freeze_start_up_objects() -> None:
    """Leave what start-up built out of every later garbage collection.

    The spec, the validators, the routes, the modules: some 130,000 objects that live as
    long as the process. Left in the collector's oldest generation, each full collection
    walks them all, stopping the event loop for 80-190 ms two or three times every 20 s
    under write load; frozen, a full collection takes 1-3 ms. Objects frozen here are
    never freed by the cycle collector, which is what they need.
    """
    gc.collect()
    gc.freeze()


def app_from_environment() -> AsyncApp:
    """The uvicorn factory: settings from ``SUPPORT_*``, read once at start; JSON logs."""
    configure_logging()
    return create_app(Settings.from_env(), on_started=freeze_start_up_objects)
