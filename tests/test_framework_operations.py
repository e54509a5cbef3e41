"""Operations prepared once hand each handler exactly what Connexion's own decorators do.

Two apps serve the contract with handlers that only record their arguments: one is
Connexion's ``AsyncApp``, the other ``PreparedAsyncApp``. Request validation is left out
of both stacks, so every odd value (a non-numeric id, a repeated or unknown query
parameter, a form or empty body) reaches the argument mapping; both must answer each
request with the same status and call the handler with the same arguments.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from connexion import AsyncApp
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.lifespan import LifespanMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.operations import OpenAPIOperation
from connexion.resolver import Resolver
from connexion.spec import Specification
from starlette.responses import Response

from support_requests.framework import connexion_operations as prepared
from support_requests.framework.connexion_operations import ArgumentMap, PreparedAsyncApp
from support_requests.framework.routing import ContractRoutingMiddleware
from support_requests.handlers.app import load_spec
from support_requests.handlers.auth import TokenVerifier, bearer_security
from support_requests.handlers.operations import OPERATIONS
from support_requests.handlers.settings import Settings
from tests.helpers import ADMIN, MOBILE, SECRET, admin, customer

DEPENDENCIES = ("desk", "idempotency", "database", "expected_revision")
CUSTOMER = customer(sub="arg-map-customer")
ADMIN_HEADERS = admin()

Call = tuple[str, dict[str, Any]]


def recording_resolver(calls: list[Call]) -> Resolver:
    """Each operationId resolves to a recorder with its handler's signature, its services
    bound the way the app factory binds them."""

    def resolve(operation_id: str) -> Callable[..., Any]:
        handler = OPERATIONS[operation_id]
        signature = inspect.signature(handler)

        async def record(**kwargs: Any) -> Response:
            calls.append((operation_id, kwargs))
            return Response(b"{}", media_type="application/json")

        record.__signature__ = signature  # type: ignore[attr-defined]
        bound = functools.partial(
            record, **{name: f"<{name}>" for name in DEPENDENCIES if name in signature.parameters}
        )
        bound.__signature__ = inspect.signature(bound)  # type: ignore[attr-defined]
        return bound

    return Resolver(function_resolver=resolve)


def stack(*inner: type) -> list[type]:
    """Connexion's stack with the contract's routing and security, ``inner`` after them."""
    return [
        ServerErrorMiddleware,
        ExceptionMiddleware,
        ContractRoutingMiddleware,
        SecurityMiddleware,
        *inner,
        LifespanMiddleware,
        ContextMiddleware,
    ]


def _app(app_class: type[AsyncApp], calls: list[Call]) -> AsyncApp:
    verifier = TokenVerifier(Settings(database_url="sqlite://", jwt_secret=SECRET.encode()))
    app = app_class(__name__, middlewares=stack())
    app.add_api(
        load_spec(),
        resolver=recording_resolver(calls),
        security_map={"bearer": bearer_security(verifier)},
        pythonic_params=True,
    )
    return app


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for template, item in load_spec()["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                yield template, method.upper(), operation


IDS = ["1", "42", "007", "9223372036854775807", "abc", "-3", "1.5", "+4", "1e3"]
QUERIES = [
    "",
    "limit=5",
    "limit=5&limit=7",
    "limit=",
    "limit=abc",
    "limit=3.0",
    "status=open",
    "status=open&status=closed",
    "cursor=abc",
    "assigned=true",
    "assigned=yes",
    "sort=-updatedAt",
    "assigned=false&category=payment",
    "assigned=TRUE",
    "q=login",
    "customer=alice",
    "limit=5&unknown=1",
    "unknown",
    "limit=5&status=resolved&cursor=x",
]
JSON = {"Content-Type": "application/json"}
BODIES: list[tuple[dict[str, str], bytes]] = [
    (JSON, b'{"category": "other", "subject": "s", "message": "m"}'),
    ({"Content-Type": "application/json"}, b'{"body": "hello", "status": "closed"}'),
    ({"Content-Type": "application/json; charset=utf-8"}, b'{"body": "x"}'),
    ({"Content-Type": "application/json"}, b"null"),
    ({"Content-Type": "application/json"}, b"[1, 2]"),
    ({"Content-Type": "application/json"}, b""),
    ({"Content-Type": "application/json"}, b"{not json"),
    ({"Content-Type": "application/problem+json"}, b'{"body": "x"}'),
    ({"Content-Type": "text/plain"}, b"hello"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"body=hello&limit=4"),
    ({}, b'{"body": "no content type"}'),
]


def contract_requests() -> Iterator[tuple[str, str, dict[str, str], bytes]]:
    for template, method, operation in _operations():
        scheme = next(iter((operation.get("security") or [{}])[0]), None)
        auth = ADMIN_HEADERS if scheme == "adminToken" else CUSTOMER if scheme else {}
        ids = IDS if "{id}" in template else ["-"]
        bodies = BODIES if method in ("POST", "PATCH") else [({}, b"")]
        cases = itertools.chain(
            itertools.product(ids, QUERIES, bodies[:1]),
            itertools.product(ids[:2], QUERIES[:2], bodies[1:]),
        )
        for id_, query, (headers, body) in cases:
            path = template.replace("{id}", id_)
            yield method, f"{path}?{query}" if query else path, {**auth, **headers}, body


def _transcript(app_class: type[AsyncApp]) -> list[tuple[int, list[Call]]]:
    calls: list[Call] = []
    transcript = []
    with _app(app_class, calls).test_client(raise_server_exceptions=False) as client:
        for method, url, headers, body in contract_requests():
            calls.clear()
            response = client.request(method, url, headers=headers, content=body)
            transcript.append((response.status_code, list(calls)))
    return transcript


def test_handlers_get_the_arguments_connexion_gives_them() -> None:
    by_connexion = _transcript(AsyncApp)
    prepared_once = _transcript(PreparedAsyncApp)

    assert len(by_connexion) == len(prepared_once) > 900
    for request, expected, actual in zip(
        contract_requests(), by_connexion, prepared_once, strict=True
    ):
        assert actual == expected, request
    answered = [calls for _, calls in by_connexion if calls]
    assert len(answered) > 300


def test_every_operation_of_the_contract_but_the_uploads_has_an_argument_map() -> None:
    specification = Specification.load(load_spec())
    resolver = recording_resolver([])
    for template, method, operation in _operations():
        spec_operation = OpenAPIOperation.from_spec(
            specification, path=template, method=method.lower(), resolver=resolver
        )
        sanitise = prepared._ParameterDecorator(
            operation=spec_operation, framework=None, pythonic_params=True
        ).sanitize_fn
        mapped = ArgumentMap.of(spec_operation, spec_operation.function, sanitise)
        # Form bodies (uploads) are mapped by Connexion itself, as the module says.
        form = "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
        assert (mapped is None) == form, operation["operationId"]


@pytest.mark.parametrize(
    ("method", "url", "headers", "body"),
    [
        ("GET", f"{MOBILE}/7", CUSTOMER, b""),
        ("GET", f"{MOBILE}?limit=5&status=open", CUSTOMER, b""),
        ("POST", MOBILE, {**CUSTOMER, "Content-Type": "application/json"}, b'{"subject": "s"}'),
        ("PATCH", f"{ADMIN}/3", {**ADMIN_HEADERS, "Content-Type": "application/json"}, b"{}"),
    ],
)
def test_ordinary_requests_are_mapped_without_connexion_decorator(
    monkeypatch: pytest.MonkeyPatch, method: str, url: str, headers: dict[str, str], body: bytes
) -> None:
    mapped: list[dict[str, Any] | None] = []
    original = ArgumentMap.arguments

    async def spy(self: ArgumentMap, request: Any) -> dict[str, Any] | None:
        kwargs = await original(self, request)
        mapped.append(kwargs)
        return kwargs

    monkeypatch.setattr(ArgumentMap, "arguments", spy)
    calls: list[Call] = []
    with _app(PreparedAsyncApp, calls).test_client() as client:
        response = client.request(method, url, headers=headers, content=body)

    assert response.status_code == 200
    assert len(mapped) == 1 and mapped[0] is not None
    assert json.dumps(calls[0][1], default=str)
