"""Connexion's router with each path parameter matched as one plain segment, for our API only.

Replaces ``connexion.middleware.routing.RoutingAPI._framework_path_and_name`` (connexion
3.3.0). Upstream turns an integer path parameter ``{id}`` into Starlette's ``{id:int}``,
matched by the ``int`` convertor ``RoutingMiddleware.__init__`` registers process-wide
(``[+-]?[0-9]+``): ``/support-requests/abc`` then matches no route and is a 404, where the
contract says 400 ``invalid_path_param``. Here every parameter is ``{name}``, Starlette's
default one-segment ``str`` convertor, so any id reaches request validation, which
answers 400. Nothing is registered: other routers in the process are left as they were.

``operation_id_of`` reads the operation Connexion's router matched, from the scope
extension ``RoutingOperation.__call__`` writes (``connexion_routing``).

Guarded by ``tests/test_framework_routing.py``.
"""

from __future__ import annotations

from typing import Any

from connexion.frameworks.starlette import starlettify_path
from connexion.middleware.abstract import ROUTING_CONTEXT
from connexion.middleware.routing import RoutingAPI, RoutingMiddleware
from connexion.operations import AbstractOperation
from starlette.routing import Mount, Router
from starlette.types import Scope


def path_template(spec_path: str) -> str:
    """The Starlette route path of a spec path: ``{name}`` segments, no convertors."""
    path: str = starlettify_path(spec_path)
    return path


class _ContractRoutingAPI(RoutingAPI):  # type: ignore[misc]
    @staticmethod
    def _framework_path_and_name(_operation: AbstractOperation, path: str) -> tuple[str, str]:
        route_path = path_template(path)
        return route_path, route_path


class ContractRoutingMiddleware(RoutingMiddleware):  # type: ignore[misc]
    """Connexion's ``RoutingMiddleware`` whose APIs route path parameters untyped."""

    def add_api(
        self,
        specification: Any,
        base_path: str | None = None,
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """``RoutingMiddleware.add_api`` (3.3.0), with ``_ContractRoutingAPI``."""
        api = _ContractRoutingAPI(
            specification, base_path=base_path, arguments=arguments, next_app=self.app, **kwargs
        )
        for route in self.router.routes:
            if isinstance(route, Mount) and route.path == api.base_path:
                mounted = route.app
                if isinstance(mounted, Router):
                    mounted.default = api.router
        self.router.mount(api.base_path, app=api.router)


def operation_id_of(scope: Scope) -> str | None:
    """The operationId Connexion's router matched for this request, if any."""
    routing = scope.get("extensions", {}).get(ROUTING_CONTEXT, {})
    operation_id = routing.get("operation_id")
    return operation_id if isinstance(operation_id, str) else None
