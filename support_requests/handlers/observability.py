"""Request ids and one structured log line per request.

``X-Request-ID`` is taken from the request when it is sane (1 to 128 visible ASCII
characters) or generated, echoed on the response, and written into every
problem body as ``requestId``. The log line carries the request id, method,
route template, status, duration and the caller's ``sub``: never the token or
a message body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from support_requests.handlers.problems import PROBLEM_JSON

access_log = logging.getLogger("support_requests.access")

# What ``logging`` records as the caller when it is told not to look (``_srcfile = None``).
_NO_CALLER_FILE, _NO_CALLER_LINE, _NO_CALLER_FUNCTION = "(unknown file)", 0, "(unknown function)"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
REQUEST_ID_KEY = "support.request_id"


class JsonLogFormatter(logging.Formatter):
    """Each record as one JSON object (the access log's fields at the top level)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the service's own loggers."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    for name in ("support_requests",):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False


def request_id_of(scope: Scope) -> str | None:
    """The id the current request runs under."""
    value = scope.get(REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


class RequestContext:
    """Outermost middleware: request id, ``requestId`` in problems, the access log line."""

    def __init__(self, app: ASGIApp, route_of: Callable[[str | None], str | None]) -> None:
        self.app = app
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = Headers(scope=scope).get("x-request-id")
        request_id = (
            offered if offered and _SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        )
        scope[REQUEST_ID_KEY] = request_id
        extensions: dict[str, Any] = scope.setdefault("extensions", {})
        status = 500
        problem_start: Message | None = None
        problem_chunks: list[bytes] = []

        async def send_with_id(message: Message) -> None:
            nonlocal status, problem_start
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                if headers.get("content-type", "").startswith(PROBLEM_JSON):
                    problem_start = message
                    return
            elif message["type"] == "http.response.body" and problem_start is not None:
                problem_chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = _with_request_id(b"".join(problem_chunks), request_id)
                MutableHeaders(scope=problem_start)["content-length"] = str(len(body))
                await send(problem_start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                routing = extensions.get("connexion_routing", {})
                context = extensions.get("connexion_context", {})
                fields = {
                    "requestId": request_id,
                    "method": scope["method"],
                    "route": self.route_of(routing.get("operation_id")) or scope["path"],
                    "status": status,
                    "durationMs": round((time.perf_counter() - started) * 1000, 2),
                    "sub": context.get("user"),
                }
                # ``access_log.info`` with no caller lookup: the line is always written
                # from here, and looking up the calling frame is a seventh of its cost.
                record = access_log.makeRecord(
                    access_log.name,
                    logging.INFO,
                    _NO_CALLER_FILE,
                    _NO_CALLER_LINE,
                    "request",
                    (),
                    None,
                    func=_NO_CALLER_FUNCTION,
                    extra={"fields": fields},
                )
                access_log.handle(record)


def _with_request_id(body: bytes, request_id: str) -> bytes:
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(problem, dict):
        problem["requestId"] = request_id
        return orjson.dumps(problem)
    return body
