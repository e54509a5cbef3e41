"""The compiled checks say "valid" exactly where jsonschema does, for the contract's schemas.

``validation.accepts`` lets a request through without asking jsonschema; for every
parameter and body schema of the contract it covers, it must agree with jsonschema (as
Connexion configures it) on every value: schema-shaped values, near misses and any JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from connexion.operations import OpenAPIOperation
from connexion.resolver import Resolver
from connexion.spec import Specification
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support_requests.handlers.app import load_spec
from support_requests.handlers.validation import accepts, compiled

pytestmark = pytest.mark.slow  # Hypothesis over every schema: ~20 s of CPU

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def _request_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each schema requests are validated with, as Connexion's operations hand them over."""
    specification = Specification.load(load_spec())
    resolver = Resolver(function_resolver=lambda _operation_id: lambda: None)
    for template, item in specification["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            spec_operation = OpenAPIOperation.from_spec(
                specification, path=template, method=method, resolver=resolver
            )
            for parameter in spec_operation.parameters:
                yield f"{method} {template} {parameter['name']}", parameter["schema"]
            for media in spec_operation.consumes:
                if media.endswith("json"):  # multipart forms are jsonschema's alone
                    yield f"{method} {template} {media}", spec_operation.body_schema(media)


SCHEMAS = dict(_request_schemas())


def _near(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values shaped by ``schema``: valid ones, values at and past its limits, and others."""
    kind = schema.get("type")
    options: list[st.SearchStrategy[Any]] = [JSON]
    if schema.get("nullable"):
        options.append(st.none())
    if kind == "integer":
        low = schema.get("minimum", -(2**70))
        high = schema.get("maximum", 2**70)
        options += [
            st.integers(min_value=low - 2, max_value=high + 2),
            st.sampled_from([low - 1, low, high, high + 1, True, False, float(low)]),
        ]
    elif kind == "string":
        if "enum" in schema:
            options.append(st.sampled_from(schema["enum"]))
            options.append(st.sampled_from(schema["enum"]).map(str.upper))
        if "pattern" in schema:
            options.append(st.from_regex(schema["pattern"]))
        longest = schema.get("maxLength", 20)
        sizes = {0, 1, schema.get("minLength", 0), min(longest, 300), longest + 1}
        options.append(st.one_of([st.text(min_size=n, max_size=n) for n in sorted(sizes)]))
        options.append(st.sampled_from(["", " ", "a\x00b", "\ud800", "x" * (longest + 1)]))
    elif kind == "array":
        item = _near(schema.get("items", {}))
        most = schema.get("maxItems", 5)
        options += [
            st.lists(item, min_size=0, max_size=most + 1),
            st.lists(item, min_size=1, max_size=2).map(lambda items: items + items[:1]),
            st.lists(st.sampled_from([1, True, "a", 1.0]), max_size=3),
        ]
    elif kind == "object":
        properties = schema.get("properties", {})
        required = {name: _near(properties.get(name, {})) for name in schema.get("required", [])}
        optional = {name: _near(sub) for name, sub in properties.items() if name not in required}
        shaped = st.fixed_dictionaries(required, optional=optional)
        options += [
            shaped,
            shaped.flatmap(lambda d: st.just({**d, "unexpected": 1})),
            st.dictionaries(st.sampled_from(sorted(properties) or ["x"]), JSON, max_size=3),
        ]
    return st.one_of(options)


def test_the_hot_schemas_have_a_compiled_check() -> None:
    covered = [name for name, schema in SCHEMAS.items() if accepts(schema) is not None]
    for hot in (
        "get /api/mobile/support-requests/{id} id",
        "get /api/mobile/support-requests limit",
        "post /api/mobile/support-requests application/json",
        "post /api/mobile/support-requests/{id}/messages application/json",
    ):
        assert hot in covered


@pytest.mark.parametrize("name", [n for n, s in SCHEMAS.items() if accepts(s) is not None])
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_compiled_check_agrees_with_jsonschema(name: str, data: st.DataObject) -> None:
    schema = SCHEMAS[name]
    check = accepts(schema)
    assert check is not None
    value = data.draw(_near(schema))

    assert check(value) is compiled(schema).is_valid(value)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "exclusiveMinimum": True, "minimum": 1},
        {"type": "string", "format": "email"},
        {"type": "number"},
        {"type": "array", "items": {"type": "string"}, "contains": {"const": "a"}},
        {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
        {"type": "object", "properties": {"a": {"type": "array"}}},
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "string", "enum": ["a", 1]},
        {"$ref": "#/components/schemas/Status"},
        {"type": "integer", "multipleOf": 2},
        {"allOf": [{"type": "string"}]},
    ],
)
def test_a_schema_with_any_other_keyword_is_left_to_jsonschema(schema: dict[str, Any]) -> None:
    assert accepts(schema) is None


def test_unbounded_integers_are_compared_exactly() -> None:
    check = accepts({"type": "integer", "minimum": 1})
    assert check is not None
    assert check(2**200) and not check(0) and not check(True) and not check(math.inf)
