"""What the serving shortcuts must not change: the spec and UI routes, start-up hooks."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import Mount, Route

from support_requests.handlers.app import _paths_served, create_app
from support_requests.handlers.settings import Settings
from tests.helpers import MOBILE

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
