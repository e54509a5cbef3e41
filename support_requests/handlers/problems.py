"""Every error response, in one place: RFC 9457 problems with a stable ``code``.

Domain errors, the framework's own problems, routing misses and anything
unexpected all leave through here; no stack trace, SQL or secret is ever shown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from support_requests.domain.attachments import UnsupportedAttachmentType
from support_requests.domain.errors import (
    AlreadyDelivered,
    DomainError,
    FieldProblem,
    InvalidTransition,
    NotFound,
    RatingNotAllowed,
    RequestClosed,
    RuleViolation,
)
from support_requests.handlers.observability import request_id_of
from support_requests.reason_phrases import reason_phrase

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
BEARER_CHALLENGE = 'Bearer realm="support-requests"'

CODE_BY_STATUS = {
    400: "malformed_body",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "invalid_transition",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_failed",
    500: "internal_error",
    503: "service_unavailable",
}


class HttpProblem(Exception):
    """A problem response raised from validation, auth or middleware."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: Iterable[FieldProblem] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status
        self.code = code
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}


def problem_body(
    status: int,
    code: str,
    detail: str,
    errors: Iterable[FieldProblem] = (),
    request_id: str | None = None,
) -> dict[str, Any]:
    """The problem document, naming the request it answers when there is one."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": reason_phrase(status),
        "status": status,
        "detail": detail,
        "message": detail,
        "code": code,
    }
    listed = [{"field": e.field, "message": e.message} for e in errors]
    if listed:
        body["errors"] = listed
    if request_id is not None:
        body["requestId"] = request_id
    return body


def problem_response(
    request: ConnexionRequest,
    status: int,
    code: str,
    detail: str,
    *,
    errors: Iterable[FieldProblem] = (),
    headers: dict[str, str] | None = None,
) -> ConnexionResponse:
    """The problem answering ``request``; every 401 carries the Bearer challenge."""
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", BEARER_CHALLENGE)
    return ConnexionResponse(
        status_code=status,
        mimetype=PROBLEM_JSON,
        content_type=PROBLEM_JSON,
        body=orjson.dumps(problem_body(status, code, detail, errors, request_id_of(request.scope))),
        headers=all_headers,
    )


def validation_problem(errors: list[FieldProblem]) -> HttpProblem:
    """422 listing every field."""
    count = len(errors)
    return HttpProblem(
        422,
        "validation_failed",
        f"The request has {count} invalid field{'s' if count != 1 else ''}.",
        errors=errors,
    )


def _on_http_problem(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, HttpProblem)
    return problem_response(
        request, exc.status_code, exc.code, exc.detail, errors=exc.errors, headers=exc.headers
    )


_DOMAIN_STATUS: dict[type[DomainError], tuple[int, str]] = {
    NotFound: (404, "not_found"),
    RequestClosed: (400, "request_closed"),
    InvalidTransition: (409, "invalid_transition"),
    RatingNotAllowed: (409, "rating_not_allowed"),
    AlreadyDelivered: (409, "already_delivered"),
    RuleViolation: (422, "validation_failed"),
    UnsupportedAttachmentType: (415, UnsupportedAttachmentType.CODE),
}


def _on_domain_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, DomainError)
    # The nearest mapped class: InvalidAttachment is a RuleViolation (422).
    status, code = next(_DOMAIN_STATUS[c] for c in type(exc).__mro__ if c in _DOMAIN_STATUS)
    errors = exc.problems if isinstance(exc, RuleViolation) else []
    return problem_response(request, status, code, exc.detail, errors=errors)


def _on_framework_problem(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Connexion's own problems (no token, wrong media type, empty body)."""
    assert isinstance(exc, ProblemException)
    status = exc.status
    if status >= 500:
        logger.error("framework problem: %r", exc)
        return problem_response(
            request, 500, "internal_error", "The server could not answer this request."
        )
    detail = {
        401: "A bearer token is required.",
        403: "This token may not use this operation.",
        415: f"The body must be sent as {_media_type_for(request.url.path)}.",
    }.get(status, exc.detail or reason_phrase(status))
    return problem_response(request, status, CODE_BY_STATUS.get(status, "malformed_body"), detail)


def _media_type_for(path: str) -> str:
    """What an operation's body is: uploads are multipart, everything else JSON."""
    return "multipart/form-data" if path.endswith("/attachments") else "application/json"


def _http_exception_handler(
    allowed_methods: Callable[[str], str],
) -> Callable[[ConnexionRequest, Exception], ConnexionResponse]:
    """Routing misses: 404 for unknown paths, 405 with every method the spec allows."""

    def on_http_exception(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            allow = allowed_methods(request.url.path)
            return problem_response(
                request,
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here; use {allow}.",
                headers={"Allow": allow},
            )
        if exc.status_code == 404:
            return problem_response(request, 404, "not_found", "There is nothing at this path.")
        status = exc.status_code
        return problem_response(
            request, status, CODE_BY_STATUS.get(status, "malformed_body"), str(exc.detail)
        )

    return on_http_exception


def _on_database_error(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    logger.error("database unavailable: %s", type(exc).__name__)
    return problem_response(
        request,
        503,
        "service_unavailable",
        "The database is unavailable; try again shortly.",
        headers={"Retry-After": "2"},
    )


def _on_unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    logger.error("unexpected error", exc_info=exc)
    return problem_response(
        request, 500, "internal_error", "The server could not answer this request."
    )


def register(app: AsyncApp, allowed_methods: Callable[[str], str]) -> None:
    """Route every exception class to its problem response."""
    app.add_error_handler(HttpProblem, _on_http_problem)
    app.add_error_handler(DomainError, _on_domain_error)
    app.add_error_handler(ProblemException, _on_framework_problem)
    app.add_error_handler(HTTPException, _http_exception_handler(allowed_methods))
    app.add_error_handler(OperationalError, _on_database_error)
    app.add_error_handler(InterfaceError, _on_database_error)
    app.add_error_handler(Exception, _on_unexpected)
