"""Connexion's request validation with each operation's validators built once.

Replaces ``connexion.middleware.request_validation.RequestValidationOperation.__call__``
(connexion 3.3.0), and with it ``RequestValidationAPI.make_operation`` and
``RequestValidationMiddleware.api_cls``. Upstream builds an operation's parameter
validator, its URI parser and its body validator again on every request, and finds the
media type with ``connexion.utils.extract_content_type``, which builds a ``typing``
alias on every call; none of that depends on the request beyond its media type. Here
the parameter validator is built once per operation and a body validator once per
(media type, charset) seen. The validators themselves are whatever the app's
``validator_map`` (Connexion's public extension point) names.

One difference the contract asks for (``_with_media_type_as_sent``): a body sent
without ``Content-Type`` is a 415, where upstream validates it as the operation's
first media type and then hands the handler raw bytes; and a media type is passed on
lower-cased, since it is compared case-insensitively (RFC 9110).

Guarded by ``tests/test_framework_validation.py``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from connexion import utils
from connexion.exceptions import UnsupportedMediaTypeProblem
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.operations import AbstractOperation
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

_NO_VALIDATOR = object()
_BODY_VALIDATORS_KEPT = 32
_connexion_logger = logging.getLogger("connexion.middleware.validation")


class _OperationValidation(RequestValidationOperation):  # type: ignore[misc]
    """Connexion's request validation of one operation, with its validators made once.

    The same steps as Connexion's, in its order: parameters, then the media type against
    the operation's ``consumes``, then the body with the validator its media type maps
    to. The parameter validator depends only on the operation; a body validator on the
    operation and the request's media type and charset, so one is kept per pair seen.
    """

    def __init__(self, next_app: ASGIApp, *, operation: AbstractOperation, **kwargs: Any) -> None:
        super().__init__(next_app, operation=operation, **kwargs)
        self._parameter_validator = self._validator_map["parameter"](
            operation.parameters,
            uri_parser=self._uri_parser(),
            strict_validation=self.strict_validation,
            security_query_params=self.security_query_params,
        )
        self._body_validator = functools.lru_cache(maxsize=_BODY_VALIDATORS_KEPT)(
            self._make_body_validator
        )

    def extract_content_type(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, str]:
        """Connexion's media type and charset of the request, or the operation's first
        ``consumes`` and UTF-8; found without ``connexion.utils.extract_content_type``,
        which builds a ``typing`` alias on every call (a tenth of this middleware)."""
        content_type = None
        for name, value in headers:
            # ASCII lowercasing: no other Latin-1 character lowercases into "content-type".
            if name.lower() == b"content-type":
                content_type = value.decode("latin-1")
                break
        mime_type, encoding = utils.split_content_type(content_type)
        if mime_type is None:
            consumes = self._operation.consumes
            mime_type = consumes[0] if consumes else "application/octet-stream"
        return mime_type, "utf-8" if encoding is None else encoding

    def _uri_parser(self) -> Any:
        return self._operation.uri_parser_class(
            self._operation.parameters, self._operation.body_definition()
        )

    def _make_body_validator(self, mime_type: str, encoding: str) -> Any:
        schema = self._operation.body_schema(mime_type)
        if not schema:
            return None
        try:
            body_validator = self._validator_map["body"][mime_type]
        except KeyError:
            return _NO_VALIDATOR
        return body_validator(
            schema=schema,
            required=self._operation.request_body.get("required", False),
            nullable=utils.is_nullable(self._operation.body_definition(mime_type)),
            encoding=encoding,
            strict_validation=self.strict_validation,
            uri_parser=self._uri_parser(),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._parameter_validator.validate(scope)
        if self._operation.consumes:
            scope = _with_media_type_as_sent(scope)
        mime_type, encoding = self.extract_content_type(scope["headers"])
        self.validate_mime_type(mime_type)
        validator = self._body_validator(mime_type, encoding)
        if validator is _NO_VALIDATOR:
            _connexion_logger.info(
                f"Skipping validation. No validator registered for content type: {mime_type}."
            )
        elif validator is not None:
            receive, scope = await validator.wrap_receive(receive, scope=scope)
        await self.next_app(scope, receive, send)


def _with_media_type_as_sent(scope: Scope) -> Scope:
    """The request as validated is the request the handler gets.

    Validation would take a body sent without ``Content-Type`` as the operation's JSON,
    and compares media types case-insensitively (as RFC 9110 says), while the handler is
    given the raw bytes of any body not labelled exactly ``application/json``. So: a body
    without a media type is 415, and a media type is passed on in lower case.
    """
    headers = scope["headers"]
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"content-type":
            media_type, _, rest = value.partition(b";")
            lowered = media_type.strip().lower()
            if lowered == media_type:
                return scope
            headers = list(headers)
            headers[index] = (name, lowered + (b";" + rest if rest else b""))
            return {**scope, "headers": headers}
    declared = Headers(scope=scope).get("content-length")
    if (declared is not None and declared != "0") or "transfer-encoding" in Headers(scope=scope):
        raise UnsupportedMediaTypeProblem(detail="The body must be sent as application/json.")
    return scope


class _ValidationAPI(RequestValidationAPI):  # type: ignore[misc]
    def make_operation(self, operation: AbstractOperation) -> RequestValidationOperation:
        return _OperationValidation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class RequestValidation(RequestValidationMiddleware):  # type: ignore[misc]
    """Connexion's request validation middleware, each operation's validators made once."""

    api_cls = _ValidationAPI
