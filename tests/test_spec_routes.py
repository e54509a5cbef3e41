"""The served contract is the file, and the spec and the handlers route one to one."""

from __future__ import annotations

import importlib
import inspect
import re
from collections import Counter
from typing import Any

import yaml

from support_requests.handlers.operations import OPERATIONS
from support_requests.openapi import SPEC_PATH

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Every module that serves operations; a module the spec names is checked as well.
HANDLER_MODULES = {"support_requests.handlers.mobile", "support_requests.handlers.admin"}


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return spec


def _operation_ids(spec: dict[str, Any]) -> list[str]:
    return [
        operation["operationId"]
        for item in spec["paths"].values()
        for method, operation in item.items()
        if method in METHODS
    ]


def _public_handlers(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    return {
        f"{module_name}.{name}"
        for name, function in vars(module).items()
        if not name.startswith("_")
        and inspect.iscoroutinefunction(function)
        and function.__module__ == module_name
    }


def test_the_served_spec_is_the_file(client: Any) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == _spec()


def test_operation_ids_are_unique() -> None:
    repeated = [name for name, n in Counter(_operation_ids(_spec())).items() if n > 1]
    assert repeated == []


def test_every_handler_has_an_operation_and_every_operation_a_handler() -> None:
    routed = set(_operation_ids(_spec()))
    assert sorted(routed - set(OPERATIONS)) == [], "operations without a handler"
    assert sorted(set(OPERATIONS) - routed) == [], "handlers that no operation routes to"
    served = {f"{fn.__module__}.{fn.__name__}" for fn in OPERATIONS.values()}
    modules = HANDLER_MODULES | {name.rsplit(".", 1)[0] for name in served}
    public = set().union(*(_public_handlers(module) for module in modules))
    assert sorted(public - served) == [], "public handlers that no operation routes to"
    assert len(served) == len(OPERATIONS), "one handler serves two operations"


def test_operation_ids_are_camel_case_verbs_not_python_paths() -> None:
    for operation_id in _operation_ids(_spec()):
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", operation_id), operation_id
        assert "handlers" not in operation_id.lower()


def test_the_mobile_and_admin_apis_are_routed() -> None:
    served = {f"{fn.__module__}.{fn.__name__}" for fn in OPERATIONS.values()}
    for module in HANDLER_MODULES:
        handlers = _public_handlers(module)
        assert handlers, module
        assert handlers <= served
