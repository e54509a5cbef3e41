"""``framework.swagger_ui`` against Connexion's stock spec and UI routes.

What the serving shortcut must not change (the spec and UI routes, start-up hooks),
and the one thing it does differently: ``/openapi.json`` is the file as written,
``$ref``s and all, where stock Connexion serves a copy with each one inlined.
"""

from __future__ import annotations

from typing import Any

import pytest
from connexion import AsyncApp
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.lifespan import LifespanMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.middleware.swagger_ui import SwaggerUIMiddleware
from connexion.options import SwaggerUIOptions
from starlette.routing import Mount, Route

from support_requests.framework.swagger_ui import SpecAsWritten, _paths_served
from support_requests.handlers.app import create_app, load_spec
from support_requests.handlers.settings import Settings
from tests.helpers import MOBILE
from tests.test_framework_operations import Call, recording_resolver

UI_ROUTES: list[Any] = [
    Route("/openapi.json", lambda _request: None),
    Route("/ui/", lambda _request: None),
    Route("/ui", lambda _request: None),
    Mount("/ui", routes=[]),
]


@pytest.mark.parametrize(
    "path",
    ["/openapi.json", "/openapi.json/", "/openapi.json//", "/ui", "/ui/", "/ui/x.css", "/ui//"],
)
def test_paths_the_ui_router_matches_or_redirects_go_to_it(path: str) -> None:
    assert _paths_served("", UI_ROUTES)(path)


@pytest.mark.parametrize(
    "path", [MOBILE, f"{MOBILE}/1", "/healthz", "/openapi.jsonx", "/uix", "/", "/api/ui/"]
)
def test_other_paths_skip_the_ui_router(path: str) -> None:
    assert not _paths_served("", UI_ROUTES)(path)


def test_a_route_with_parameters_sends_every_path_to_the_router() -> None:
    served = _paths_served("", [Route("/files/{name}", lambda _request: None)])
    assert served(f"{MOBILE}/1")


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        ("/openapi.json", 200, None),
        ("/openapi.json/", 307, "http://testserver/openapi.json"),
        ("/ui", 307, "/ui/"),
        ("/ui/", 200, None),
        ("/ui/swagger-ui.css", 200, None),
        ("/healthz/", 307, "http://testserver/healthz"),
    ],
)
def test_spec_and_ui_are_served_and_redirected_as_before(
    client: Any, path: str, status: int, location: str | None
) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == status
    assert response.headers.get("location") == location


def test_on_started_runs_once_the_app_is_ready(settings: Settings) -> None:
    started: list[bool] = []
    app = create_app(settings, on_started=lambda: started.append(True))
    assert started == []

    with app.test_client() as client:
        assert started == [True]
        assert client.get("/healthz").status_code == 200
    assert started == [True]


def _ui_app(ui_middleware: type[SwaggerUIMiddleware], calls: list[Call]) -> AsyncApp:
    app = AsyncApp(
        __name__,
        middlewares=[
            ServerErrorMiddleware,
            ExceptionMiddleware,
            ui_middleware,
            RoutingMiddleware,
            LifespanMiddleware,
            ContextMiddleware,
        ],
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/ui"),
    )
    app.add_api(load_spec(), resolver=recording_resolver(calls), pythonic_params=True)
    return app


UI_PATHS = ["/ui", "/ui/", "/ui/swagger-ui.css", "/ui/nothing.js", "/openapi.json/", "/healthz"]
UI_PATHS += ["/healthz/", "/nowhere", "/uix", f"{MOBILE}/1"]


def test_ui_and_other_paths_are_answered_as_stock_connexion_answers_them() -> None:
    answers: dict[type, list[tuple[int, str | None, bytes, list[Call]]]] = {}
    for ui_middleware in (SwaggerUIMiddleware, SpecAsWritten):
        calls: list[Call] = []
        answers[ui_middleware] = []
        with _ui_app(ui_middleware, calls).test_client() as client:
            for path in UI_PATHS:
                calls.clear()
                response = client.get(path, follow_redirects=False)
                location = response.headers.get("location")
                answers[ui_middleware].append(
                    (response.status_code, location, response.content, list(calls))
                )
    assert answers[SpecAsWritten] == answers[SwaggerUIMiddleware]


def test_the_spec_is_served_as_written_where_stock_connexion_inlines_it() -> None:
    served = {}
    for ui_middleware in (SwaggerUIMiddleware, SpecAsWritten):
        with _ui_app(ui_middleware, []).test_client() as client:
            served[ui_middleware] = client.get("/openapi.json").json()

    assert served[SpecAsWritten] == load_spec()
    assert "$ref" in str(served[SpecAsWritten])
    assert "$ref" not in str(served[SwaggerUIMiddleware]["paths"])
    assert served[SwaggerUIMiddleware]["paths"].keys() == load_spec()["paths"].keys()
