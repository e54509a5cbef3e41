"""Request ids, what a request is about, and one structured log line per request.

``X-Request-ID`` is taken from the request when it is sane (1 to 128 visible ASCII
characters) or generated, and echoed on the response; ``problems`` writes it into
every problem body as ``requestId`` when it builds one. The log line carries the request id, method,
route template, status, duration and the caller's ``sub``: never the token or
a message body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from support_requests import metrics
from support_requests.domain.principal import Principal
from support_requests.framework.routing import operation_id_of

access_log = logging.getLogger("support_requests.access")

# What ``logging`` records as the caller when it is told not to look (``_srcfile = None``).
_NO_CALLER_FILE, _NO_CALLER_LINE, _NO_CALLER_FUNCTION = "(unknown file)", 0, "(unknown function)"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_REQUEST_KEY = "support.request"


@dataclass
class RequestInfo:
    """What is known of the request being answered.

    One object per request, kept in its scope: the routers below pass copies of the
    scope on, and each copy shares this object, so what is learnt below (the caller,
    the operation) is seen by the access log above.
    """

    request_id: str | None = None
    caller: Principal | None = None
    operation_id: str | None = None


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


def _info(scope: Scope) -> RequestInfo:
    info = scope.get(_REQUEST_KEY)
    if not isinstance(info, RequestInfo):
        info = scope[_REQUEST_KEY] = RequestInfo()
    return info


def request_id_of(scope: Scope) -> str | None:
    """The id the current request runs under."""
    return _info(scope).request_id


def remember_caller(scope: Scope, principal: Principal) -> None:
    """Record the authenticated caller of a request, for the rate limits and the log."""
    _info(scope).caller = principal


def caller_of(scope: Scope) -> Principal | None:
    """The authenticated caller of a request, once authentication has run."""
    return _info(scope).caller


def remember_operation(scope: Scope, operation_id: str) -> None:
    """Record the operation a request was answered as, when the router did not route it."""
    _info(scope).operation_id = operation_id


def operation_of(scope: Scope) -> str | None:
    """The operationId a request was answered as: recorded, or as the router matched."""
    return _info(scope).operation_id or operation_id_of(scope)


class RequestContext:
    """Outermost middleware: the request id, the access log line."""

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
        scope[_REQUEST_KEY] = info = RequestInfo(request_id)
        # The router below records the operation it matched in ``extensions``, on its copy
        # of the scope: one dict made here is shared by every copy, so the log line and
        # the metrics see it. (uvicorn's scope has no ``extensions``; a test client's has.)
        scope.setdefault("extensions", {})
        status = 500
        metrics.in_flight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            metrics.observe_request(operation_of(scope), status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                caller = info.caller
                fields = {
                    "requestId": request_id,
                    "method": scope["method"],
                    "route": self.route_of(operation_of(scope)) or scope["path"],
                    "status": status,
                    "durationMs": round(elapsed * 1000, 2),
                    "sub": caller.sub if caller is not None else None,
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
