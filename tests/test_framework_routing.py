"""``framework.routing`` against Connexion's stock router.

Both routers route the contract's paths; each request's matched operation and path
parameters are recorded. They agree wherever an id is a number Connexion's ``int``
convertor matches, and differ exactly where it does not: there ours still routes the
request to its operation (whose validation answers 400), where stock Connexion routes
it nowhere (404). Neither touches Starlette's process-wide convertors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import starlette.convertors
from connexion.frameworks.starlette import IntegerConverter
from connexion.middleware.routing import RoutingMiddleware
from connexion.resolver import Resolver
from connexion.spec import Specification
from starlette.types import Message, Receive, Scope, Send

from support_requests.framework.routing import ContractRoutingMiddleware, operation_id_of
from support_requests.handlers.app import create_app, load_spec
from support_requests.handlers.settings import Settings
from tests.helpers import ADMIN, MOBILE, SECRET

Routed = tuple[str | None, dict[str, Any]]
"""The operation a request was routed to and its path parameters; or, when the router
answered it itself, its status and no parameters."""


def _router(middleware_class: type[RoutingMiddleware]) -> tuple[RoutingMiddleware, list[Routed]]:
    routed: list[Routed] = []

    async def record(scope: Scope, _receive: Receive, _send: Send) -> None:
        routed.append((operation_id_of(scope), dict(scope.get("path_params", {}))))

    router = middleware_class(record)
    router.add_api(
        Specification.load(load_spec()),
        resolver=Resolver(function_resolver=lambda _operation_id: lambda: None),
    )
    return router, routed


def _route(middleware_class: type[RoutingMiddleware], method: str, path: str) -> Routed:
    router, routed = _router(middleware_class)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            routed.append((str(message["status"]), {}))

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    scope |= {"query_string": b""}
    asyncio.run(router(scope, receive, send))
    return routed[0]


NUMERIC = ["1", "42", "007", "9223372036854775808", "-3", "+4"]
NOT_NUMERIC = ["abc", "1.5", "1e3", "%C3%A9", "0x10"]


@pytest.mark.parametrize("base", [MOBILE, ADMIN])
@pytest.mark.parametrize("id_", NUMERIC)
def test_numeric_ids_route_as_stock_connexion_routes_them(base: str, id_: str) -> None:
    stock_operation, stock_params = _route(RoutingMiddleware, "GET", f"{base}/{id_}")
    operation, params = _route(ContractRoutingMiddleware, "GET", f"{base}/{id_}")

    assert operation == stock_operation is not None
    assert params == {"id": id_}  # validation types it (stock: int(id_))
    assert stock_params == {"id": int(id_)}


@pytest.mark.parametrize("base", [MOBILE, ADMIN])
@pytest.mark.parametrize("id_", NOT_NUMERIC)
def test_other_ids_reach_the_operation_where_stock_connexion_routes_nowhere(
    base: str, id_: str
) -> None:
    assert _route(RoutingMiddleware, "GET", f"{base}/{id_}") == (None, {})
    operation, params = _route(ContractRoutingMiddleware, "GET", f"{base}/{id_}")
    assert operation is not None and params == {"id": id_}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", MOBILE),
        ("POST", MOBILE),
        ("GET", "/healthz"),
        ("GET", "/nowhere"),
        ("PUT", MOBILE),
        ("PUT", f"{MOBILE}/1"),
    ],
)
def test_paths_without_parameters_route_as_stock_connexion_routes_them(
    method: str, path: str
) -> None:
    assert _route(ContractRoutingMiddleware, method, path) == _route(
        RoutingMiddleware, method, path
    )


def test_the_process_wide_int_convertor_is_connexions_own() -> None:
    create_app(Settings(database_url="sqlite://", jwt_secret=SECRET.encode()))
    _router(ContractRoutingMiddleware)
    assert type(starlette.convertors.CONVERTOR_TYPES["int"]) is IntegerConverter
