"""Connexion's spec and Swagger UI routes: the spec as written, tried only where they match.

Replaces two pieces of connexion 3.3.0's ``connexion.middleware.swagger_ui``:

- ``SwaggerUIAPI._spec_for_prefix``: upstream serves ``/openapi.json`` with every
  ``$ref`` inlined (its resolved copy); the contract is published as the file says,
  ``$ref``s and all, so generated clients get named schemas.
- ``SwaggerUIMiddleware.add_api`` and ``__call__``: upstream sends every request
  through its router (a Starlette ``Router`` whose routes are all tried, then a
  redirect tried) before the API's; here a request for a path this router can neither
  match nor redirect goes straight to the next app, as the router's default would send
  it. That is most requests, so the whole spec-and-UI router is skipped for them.

Guarded by ``tests/test_framework_swagger_ui.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connexion.middleware.swagger_ui import SwaggerUIAPI, SwaggerUIMiddleware
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send


class _SpecAsWrittenAPI(SwaggerUIAPI):  # type: ignore[misc]
    """``/openapi.json`` as the file says, ``$ref``s and all (Connexion serves an inlined copy)."""

    def _spec_for_prefix(self, request: Request) -> dict[str, Any]:
        base_path = self._base_path_for_prefix(request)
        specification = self.specification.with_base_path(base_path) if base_path else None
        raw: dict[str, Any] = (specification or self.specification).raw
        return raw


class SpecAsWritten(SwaggerUIMiddleware):  # type: ignore[misc]
    """Connexion's spec and Swagger UI routes, serving the spec as written.

    Connexion sends every request through this router before its own; a request for a
    path the router cannot match (nor redirect to, by adding or removing a trailing
    slash) goes to the next app directly, as the router's default would send it.
    """

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self._may_serve: list[Callable[[str], bool]] = []

    def add_api(self, specification: Any, base_path: str | None = None, **kwargs: Any) -> None:
        api = _SpecAsWrittenAPI(
            specification, base_path=base_path, default=self.default_fn, **kwargs
        )
        self.router.mount(api.base_path, app=api.router)
        self._may_serve.append(_paths_served(api.base_path, api.router.routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Behind a root_path, routes match part of the path: the router decides.
        if scope["type"] == "http" and not scope.get("root_path"):
            path = scope["path"]
            for may_serve in self._may_serve:
                if may_serve(path):
                    break
            else:
                await self.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _paths_served(base_path: str, routes: list[Any]) -> Callable[[str], bool]:
    """Whether a router mounted at ``base_path`` with ``routes`` may match ``path`` (or
    redirect it); true for any path it cannot rule out."""
    exact: set[str] = set()
    mounts: list[str] = []
    for route in routes:
        if type(route) is Route and "{" not in route.path:
            exact.add(route.path)
        elif type(route) is Mount and "{" not in route.path:
            mounts.append(route.path + "/")
        else:
            return lambda _path: True
    prefixes, mounted_at = tuple(mounts), base_path + "/"

    def may_serve(path: str) -> bool:
        if not path.startswith(mounted_at):
            return True
        rest = path[len(base_path) :]
        for candidate in (rest, rest.rstrip("/"), rest + "/"):
            if candidate in exact or candidate.startswith(prefixes):
                return True
        return False

    return may_serve
