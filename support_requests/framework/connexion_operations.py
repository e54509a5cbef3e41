"""Connexion's ``AsyncApp`` with each operation's handler chain built once, at start.

Replaces, from connexion 3.3.0: ``connexion.apps.asynchronous.AsyncOperation.fn`` (and
so ``AsyncApi.make_operation`` and ``AsyncASGIApp.api_cls``), the ``uri_parser`` and
``_parameter_decorator_cls`` of ``connexion.decorators.StarletteDecorator``, and, for
the operations it covers, ``AsyncParameterDecorator``'s mapping of a request to
keyword arguments (``prep_kwargs``). ``PreparedAsyncApp`` sets ``AsyncApp``'s
private ``_middleware_app`` to use them.

Connexion 3.3 builds an operation's handler chain again on every request:
``AsyncOperation.fn`` makes a new ``StarletteDecorator``, whose wrapper makes a new URI
parser and then wraps the handler in new parameter and response decorators (the
parameter decorator inspecting the handler's signature each time). None of that
depends on the request, only on the operation, which the spec fixes. Here it is built
once per operation.

The parameter decorator then maps each request to the handler's keyword arguments.
Connexion works that map out again per request (parameter definitions by name, query
defaults, sanitised names, which arguments the handler takes); ``ArgumentMap`` works it
out once per operation from the spec and the handler's signature, and per request only
converts values, with Connexion's own conversions (``coerce_type``, ``make_type``). It
covers the operations this contract has: scalar path and query parameters, a JSON body,
the security context. An operation with anything else (arrays, objects, styles,
nullable parameters, form bodies, ``**kwargs`` handlers), and any request it does not
expect (a form body, a path or query parameter the spec does not declare), goes
through Connexion's own parameter decorator, unchanged.

A JSON body is parsed once: the body validator hands what it parsed to
``remember_parsed_body``, and the argument map passes that to the handler instead of
parsing the bytes again (Connexion's ``ConnexionRequest.get_body``).

Guarded by ``tests/test_framework_operations.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
from collections.abc import Awaitable, Callable
from typing import Any, cast

from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncApi, AsyncASGIApp, AsyncOperation
from connexion.context import context, receive, scope
from connexion.decorators import StarletteDecorator
from connexion.decorators.parameter import AsyncParameterDecorator, unwrap_decorators
from connexion.exceptions import TypeValidationError
from connexion.http_facts import FORM_CONTENT_TYPES
from connexion.jsonifier import Jsonifier
from connexion.lifecycle import ConnexionRequest
from connexion.operations import AbstractOperation, OpenAPIOperation
from connexion.utils import (
    coerce_type,
    inspect_function_arguments,
    is_json_mimetype,
    is_nullable,
    make_type,
)
from starlette.datastructures import QueryParams
from starlette.responses import Response
from starlette.types import Scope

SANITISED_NAMES_KEPT = 1024
CONTEXT_ARGUMENT = "context_"  # Connexion passes its context to a handler taking this name
# Keys of a parameter object and of its schema that ``ArgumentMap`` knows the meaning of.
_PARAMETER_KEYS = frozenset({"name", "in", "required", "description", "schema", "example"})
_SCHEMA_KEYS = frozenset(
    {"type", "format", "minimum", "maximum", "minLength", "maxLength", "pattern", "enum"}
    | {"default", "description", "example", "x-pattern-message"}
)
_SCALARS = frozenset({"integer", "number", "string", "boolean"})
_PARSED_BODY_KEY = "support.parsed_body"

Sanitise = Callable[[str], str]


def remember_parsed_body(scope: Scope, body: Any) -> None:
    """Keep the request's body as validation parsed it, for the handler's arguments."""
    scope[_PARSED_BODY_KEY] = body


class _Value:
    """One declared path or query parameter: its keyword and Connexion's conversions."""

    def __init__(self, definition: dict[str, Any], keyword: str) -> None:
        self.name: str = definition["name"]
        self.keyword = keyword
        self._definition = definition
        schema = definition["schema"]
        self._kind, self._format = schema["type"], schema.get("format")
        self.default = schema.get("default", _ABSENT)

    def of_request(self, raw: Any) -> Any:
        """A request's value: coerced by the URI parser (kept if that fails), then cast."""
        with contextlib.suppress(TypeValidationError):
            raw = coerce_type(self._definition, raw, "parameter", self.name)
        return self.cast(raw)

    def cast(self, value: Any) -> Any:
        return make_type(value, self._kind, self._format)


def _scalar(definition: dict[str, Any]) -> bool:
    schema = definition.get("schema")
    return (
        set(definition) <= _PARAMETER_KEYS
        and isinstance(schema, dict)
        and set(schema) <= _SCHEMA_KEYS
        and schema.get("type") in _SCALARS
    )


class ArgumentMap:
    """How one operation's requests become its handler's keyword arguments.

    ``of`` is None for an operation it does not cover, ``arguments`` for a request it
    does not cover; Connexion's parameter decorator maps those. Otherwise the result is
    what Connexion's ``prep_kwargs`` gives: every path parameter, the query parameters
    the handler takes (request value, else the schema's default), the body if the
    handler takes it (the schema's default when there is none), then the security
    context's entries the handler takes, and ``context_``.
    """

    def __init__(
        self,
        operation: OpenAPIOperation,
        *,
        arguments: list[str],
        path: dict[str, _Value],
        query: dict[str, _Value | None],
        body_keyword: str | None,
        wants_body: bool,
    ) -> None:
        self._operation = operation
        self._arguments = frozenset(arguments)
        self._path = path
        self._query = query
        self._query_taken = [value for value in query.values() if value is not None]
        self._body_keyword = body_keyword
        self._wants_body = wants_body
        self._context_argument = CONTEXT_ARGUMENT in self._arguments

    @classmethod
    def of(
        cls, operation: AbstractOperation, function: Callable[..., Any], sanitise: Sanitise
    ) -> ArgumentMap | None:
        """The map for ``operation`` served by ``function``, or None if not covered."""
        if type(operation) is not OpenAPIOperation or operation.method.upper() == "TRACE":
            return None
        arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
        if has_kwargs:
            return None
        path: dict[str, _Value] = {}
        query: dict[str, _Value | None] = {}
        for definition in operation.parameters:
            where = definition["in"]
            if where not in ("path", "query"):
                continue  # headers and cookies are validated, never passed
            name = definition["name"]
            if not _scalar(definition) or name in path or name in query:
                return None
            keyword = sanitise(name)
            if where == "path":
                if "-" in name:  # the router renames it; leave that to Connexion
                    return None
                path[name] = _Value(definition, sanitise(keyword))
            else:
                query[name] = (
                    _Value(definition, sanitise(keyword)) if keyword in arguments else None
                )
        body_keyword = None
        if operation.is_request_body_defined:
            content = operation.request_body.get("content", {})
            if not content or not all(is_json_mimetype(media) for media in content):
                return None
            if any(is_nullable(media.get("schema", {})) for media in content.values()):
                return None
            keyword = sanitise(operation.body_name(None))
            if keyword in arguments:
                body_keyword = sanitise(keyword)
        keywords = [value.keyword for value in path.values()]
        keywords += [value.keyword for value in query.values() if value is not None]
        keywords += [body_keyword] if body_keyword is not None else []
        if len(set(keywords)) != len(keywords):
            return None  # names that collide once sanitised: Connexion's order decides
        return cls(
            operation,
            arguments=arguments,
            path=path,
            query=query,
            body_keyword=body_keyword,
            wants_body=sanitise(operation.body_name(None)) in arguments,
        )

    async def arguments(self, request: ConnexionRequest) -> dict[str, Any] | None:
        """The handler's keyword arguments; None for a request Connexion must map."""
        raw_path: dict[str, Any] = request.scope.get("path_params", {})
        if raw_path.keys() != self._path.keys():
            return None
        query_params = QueryParams(request.scope["query_string"])
        if not all(name in self._query for name in query_params):
            return None
        body = None
        if self._wants_body:
            body = request.scope.get(_PARSED_BODY_KEY, _ABSENT)
            if body is _ABSENT:
                body = request.get_body()
                while asyncio.iscoroutine(body):
                    body = await body
        mimetype = request.mimetype
        if mimetype in FORM_CONTENT_TYPES:
            return None
        kwargs: dict[str, Any] = {}
        for name, raw in raw_path.items():
            value = self._path[name]
            kwargs[value.keyword] = value.of_request(raw)
        for value in self._query_taken:
            given = query_params.getlist(value.name)
            if given:
                kwargs[value.keyword] = value.of_request(given[-1])
            elif value.default is not _ABSENT:
                kwargs[value.keyword] = value.cast(copy.deepcopy(value.default))
        if self._body_keyword is not None:
            if body is None:
                default = self._operation.body_schema(mimetype).get("default", {})
                body = copy.deepcopy(default)
            kwargs[self._body_keyword] = body
        for key, item in context.items():
            if key in self._arguments:
                kwargs[key] = item
        if self._context_argument:
            kwargs[CONTEXT_ARGUMENT] = context
        return kwargs


class _ParameterDecorator(AsyncParameterDecorator):  # type: ignore[misc]
    """Connexion's parameter decorator, with the operation's ``ArgumentMap`` in front."""

    def __init__(self, *, operation: AbstractOperation, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # A pure function of the name: remembered, not recomputed with regexes per request.
        self.sanitize_fn: Sanitise = functools.lru_cache(maxsize=SANITISED_NAMES_KEPT)(
            cast(Sanitise, vars(self)["sanitize_fn"])
        )
        self._operation = operation

    def __call__(self, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        by_connexion: Callable[[ConnexionRequest], Awaitable[Any]] = super().__call__(function)
        argument_map = ArgumentMap.of(self._operation, function, self.sanitize_fn)
        if argument_map is None:
            return by_connexion

        async def wrapper(request: ConnexionRequest) -> Any:
            kwargs = await argument_map.arguments(request)
            if kwargs is None:
                return await by_connexion(request)
            return await function(**kwargs)

        return wrapper


class _OperationDecorator(StarletteDecorator):  # type: ignore[misc]
    """``StarletteDecorator`` for one operation: its URI parser and decorators made once."""

    def __init__(
        self, operation: AbstractOperation, *, pythonic_params: bool, jsonifier: Jsonifier
    ) -> None:
        super().__init__(pythonic_params=pythonic_params, jsonifier=jsonifier)
        self._operation = operation
        self._uri_parser = operation.uri_parser_class(
            operation.parameters, operation.body_definition()
        )

    @property
    def uri_parser(self) -> Any:
        return self._uri_parser

    @property
    def _parameter_decorator_cls(self) -> Callable[..., AsyncParameterDecorator]:
        return functools.partial(_ParameterDecorator, operation=self._operation)

    def __call__(self, function: Callable[..., Any]) -> Callable[[], Awaitable[Response]]:
        decorated = self.decorate(function)
        framework, uri_parser = self.framework, self._uri_parser

        async def handle() -> Response:
            request = framework.get_request(uri_parser=uri_parser, scope=scope, receive=receive)
            response: Response = await decorated(request)
            return response

        return handle


class _PreparedOperation(AsyncOperation):  # type: ignore[misc]
    def __init__(
        self, operation: AbstractOperation, *, pythonic_params: bool, jsonifier: Jsonifier
    ) -> None:
        super().__init__(
            operation.function,
            jsonifier=jsonifier,
            operation_id=operation.operation_id,
            pythonic_params=pythonic_params,
        )
        self._handle = _OperationDecorator(
            operation, pythonic_params=pythonic_params, jsonifier=jsonifier
        )(operation.function)

    @property
    def fn(self) -> Callable[[], Awaitable[Response]]:
        return self._handle


class _PreparedApi(AsyncApi):  # type: ignore[misc]
    def make_operation(self, operation: AbstractOperation) -> AsyncOperation:
        return _PreparedOperation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )


class _PreparedASGIApp(AsyncASGIApp):  # type: ignore[misc]
    api_cls = _PreparedApi


class PreparedAsyncApp(AsyncApp):  # type: ignore[misc]
    """``AsyncApp`` whose operations are prepared once (same arguments, same behaviour)."""

    def __init__(self, import_name: str, **kwargs: Any) -> None:
        super().__init__(import_name, **kwargs)
        # The framework app the middleware stack wraps; the stack is built on first call.
        self._middleware_app = _PreparedASGIApp()
        self.middleware.app = self._middleware_app


_ABSENT = object()
