"""The app factory: the spec drives routing, validation and security.

``create_app(settings)`` builds everything from its argument; nothing reads
the environment or connects at import time. ``app_from_environment`` is the
uvicorn factory that reads ``SUPPORT_*`` once, at start.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import starlette.convertors
import yaml
from connexion import AsyncApp
from connexion.middleware import ConnexionMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.utils import get_function_from_name
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlers import problems
from handlers.auth import TokenVerifier, bearer_security_handler
from handlers.settings import Settings
from handlers.validation import VALIDATOR_MAP
from openapi import SPEC_PATH
from storage import schema
from storage.database import Database
from storage.support_desk import SupportDesk

MAX_BODY_BYTES = 64 * 1024


class _AnySegment(starlette.convertors.Convertor[str]):
    """Matches any path segment, so a malformed id reaches validation (400), not 404."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


class ContractRoutingMiddleware(RoutingMiddleware):  # type: ignore[misc]
    """Connexion's router with integer path segments matched loosely (validated later)."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        starlette.convertors.register_url_convertor("int", _AnySegment())


class BodyLimit:
    """413 for a body over 64 KiB, by ``Content-Length`` or by counting what arrives."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            raise _too_large()
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise _too_large()
            return message

        await self.app(scope, counting_receive, send)


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


def _middlewares() -> list[Any]:
    stack: list[Any] = []
    for middleware in ConnexionMiddleware.default_middlewares:
        if middleware is RoutingMiddleware:
            stack += [ContractRoutingMiddleware, BodyLimit]
        else:
            if middleware.__name__ == "ExceptionMiddleware":
                stack.append(ResponseHeaders)
            stack.append(middleware)
    return stack


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


def _injecting_resolver(desk: SupportDesk) -> Resolver:
    """Resolve each operationId to its handler with the service bound as first argument."""

    def resolve(operation_id: str) -> Callable[..., Any]:
        return functools.partial(get_function_from_name(operation_id), desk)

    return Resolver(function_resolver=resolve)


def create_app(settings: Settings) -> AsyncApp:
    """The ASGI app for ``settings``."""
    spec = yaml.safe_load(SPEC_PATH.read_text())
    database = Database(settings.database_url, pool_size=settings.pool_size)
    desk = SupportDesk(database)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if settings.create_schema:
            await database.create_schema()
        else:
            await asyncio.to_thread(
                schema.ensure_current, settings.database_url, initialise_empty=database.is_sqlite
            )
        yield
        await database.dispose()

    app = AsyncApp(
        __name__,
        lifespan=lifespan,
        middlewares=_middlewares(),
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/ui"),
    )
    app.add_api(
        spec,
        resolver=_injecting_resolver(desk),
        validator_map=VALIDATOR_MAP,
        security_map={"bearer": bearer_security_handler(TokenVerifier(settings))},
        strict_validation=True,
        validate_responses=settings.validate_responses,
        pythonic_params=True,
    )
    problems.register(app, _allowed_methods(spec))
    return app


def app_from_environment() -> AsyncApp:
    """The uvicorn factory: settings from ``SUPPORT_*``, read once at start."""
    return create_app(Settings.from_env())
