"""Request validation from the spec, answering the way the contract says.

Connexion's defaults answer 400 with the first error; the contract wants a bad
path id to be 400 ``invalid_path_param`` and every body or query violation to
be one 422 that lists each field. These validators plug into Connexion's
``validator_map``; the schemas they apply are the spec's own.

The validators are built once per operation (``framework.connexion_validation``);
the detail poll's fast path (``conditional.Revalidation``) checks its id and header
with the same ``ContractParameterValidator``. Each schema is checked by jsonschema, except that a
value a schema plainly accepts is let through by a check compiled from that schema
(``accepts``), which knows a few keywords and refuses to compile any schema with
another. It only ever says "valid" where jsonschema would; anything it does not
accept goes to jsonschema, so every problem is jsonschema's, as before.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.json_schema import Draft4RequestValidator
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.datastructures import Headers, QueryParams
from starlette.formparsers import MultiPartException
from starlette.types import Receive, Scope

from support_requests.domain.errors import FieldProblem
from support_requests.framework.connexion_multipart import SpooledMultipartValidator
from support_requests.framework.connexion_operations import remember_parsed_body
from support_requests.handlers.problems import HttpProblem, validation_problem

_COMPILED: dict[int, tuple[dict[str, Any], Any]] = {}


def compiled(schema: dict[str, Any]) -> Any:
    """The spec's schema as a validator, built once per schema object.

    Connexion hands the same schema objects to every request of an operation; the
    entry keeps its schema alive, so its ``id`` cannot be reused by another.
    """
    entry = _COMPILED.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = _COMPILED[id(schema)] = (
            schema,
            Draft4RequestValidator(schema, format_checker=Draft4Validator.FORMAT_CHECKER),
        )
    return entry[1]


Check = Callable[[Any], bool]

# Keys jsonschema does not validate with (Draft 4 ignores them). Connexion adds the spec's
# ``components`` to a body schema, for ``$ref``s; a schema with a ``$ref`` is not compiled.
_ANNOTATIONS = frozenset(
    {"description", "example", "default", "title", "x-pattern-message", "components"}
)
_KEYWORDS = {
    "integer": frozenset({"type", "format", "minimum", "maximum", "nullable"}),
    "string": frozenset(
        {"type", "format", "minLength", "maxLength", "pattern", "enum", "nullable"}
    ),
    "object": frozenset(
        {"type", "properties", "required", "additionalProperties", "minProperties", "nullable"}
    ),
    "array": frozenset({"type", "items", "minItems", "maxItems", "uniqueItems", "nullable"}),
}


def accepts(schema: dict[str, Any]) -> Check | None:
    """A check that is true only of values jsonschema finds valid against ``schema``.

    None for a schema with a keyword it does not know (or a format jsonschema checks):
    such a schema is left to jsonschema alone. Draft 4 as Connexion applies it: types
    are exact (``True`` is no integer), ``nullable`` admits ``None``, ``pattern`` is
    searched, lengths count code points.
    """
    kind = schema.get("type")
    known = _KEYWORDS.get(kind) if isinstance(kind, str) else None
    if known is None or not set(schema) - _ANNOTATIONS <= known:
        return None
    if schema.get("format") in Draft4Validator.FORMAT_CHECKER.checkers:
        return None
    if kind == "integer":
        check = _integer(schema)
    elif kind == "string":
        check = _string(schema)
    elif kind == "array":
        check = _array(schema)
    else:
        check = _object(schema)
    if check is None or schema.get("nullable") is not True:
        return check
    present = check
    return lambda value: value is None or present(value)


def _integer(schema: dict[str, Any]) -> Check | None:
    low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
    if not all(type(bound) in (int, float) for bound in (low, high)):
        return None
    return lambda value: type(value) is int and low <= value <= high


def _string(schema: dict[str, Any]) -> Check | None:
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength", math.inf)
    pattern = schema.get("pattern")
    enum = schema.get("enum")
    if enum is not None and not all(type(choice) is str for choice in enum):
        return None
    search = re.compile(pattern).search if isinstance(pattern, str) else None
    if pattern is not None and search is None:
        return None
    choices = frozenset(enum) if enum is not None else None

    def check(value: Any) -> bool:
        return (
            type(value) is str
            and shortest <= len(value) <= longest
            and (choices is None or value in choices)
            and (search is None or search(value) is not None)
        )

    return check


def _array(schema: dict[str, Any]) -> Check | None:
    items = schema.get("items")
    if not isinstance(items, dict):
        return None
    item_check = accepts(items)
    fewest, most = schema.get("minItems", 0), schema.get("maxItems", math.inf)
    unique = schema.get("uniqueItems", False)
    if item_check is None or type(unique) is not bool:
        return None
    if unique and items.get("type") != "string":
        return None  # Draft 4 tells 1 from True and 1.0 apart from 1 its own way: leave it

    def check(value: Any) -> bool:
        return (
            type(value) is list
            and fewest <= len(value) <= most
            and all(item_check(item) for item in value)
            and (not unique or len(set(value)) == len(value))
        )

    return check


def _object(schema: dict[str, Any]) -> Check | None:
    properties: dict[str, Check] = {}
    for name, subschema in schema.get("properties", {}).items():
        property_check = accepts(subschema) if isinstance(subschema, dict) else None
        if property_check is None:
            return None
        properties[name] = property_check
    required = schema.get("required", [])
    closed = schema.get("additionalProperties", True)
    fewest = schema.get("minProperties", 0)
    if type(closed) is not bool or type(fewest) is not int:
        return None
    if not all(type(name) is str for name in required):
        return None

    def check(value: Any) -> bool:
        if type(value) is not dict or len(value) < fewest:
            return False
        if any(name not in value for name in required):
            return False
        for name, item in value.items():
            property_check = properties.get(name)
            if property_check is None:
                if closed is False:
                    return False
            elif not property_check(item):
                return False
        return True

    return check


def _errors(schema: dict[str, Any], value: Any, check: Check | None) -> list[ValidationError]:
    """jsonschema's errors for ``value``; none without asking it when ``check`` accepts."""
    if check is not None and check(value):
        return []
    return list(compiled(schema).iter_errors(value))


_INTEGER = re.compile(r"-?[0-9]+")
_BOOLEANS = {"true": True, "false": False}
_UNPARSED = object()


def _coerce(schema: dict[str, Any], raw: str) -> Any:
    """The typed value of a raw path or query string, strictly: ASCII digits, true/false."""
    kind = schema.get("type")
    if kind == "integer":
        # Past 20 digits no value fits in 64 bits; int() refuses past 4300 digits anyway.
        if len(raw) > 20 or not raw.isascii() or not _INTEGER.fullmatch(raw):
            return _UNPARSED
        return int(raw)
    if kind == "boolean":
        return _BOOLEANS.get(raw, _UNPARSED)
    return raw


def _describe(error: ValidationError) -> str:
    """A sentence for a schema violation, without schema internals."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    keyword = error.validator
    value = error.validator_value
    if keyword == "enum":
        return "must be one of: " + ", ".join(str(v) for v in value)
    if keyword == "type":
        return f"must be {'an' if value == 'integer' or value == 'object' else 'a'} {value}"
    if keyword == "minimum":
        return f"must be at least {value}"
    if keyword == "maximum":
        return f"must be at most {value}"
    if keyword == "minLength":
        return "must not be empty"
    if keyword == "maxLength":
        return f"must be at most {value} characters long"
    if keyword == "pattern":
        return str(schema.get("x-pattern-message", "has an invalid format"))
    if keyword == "required":
        return "is required"
    if keyword == "additionalProperties":
        return "is not a known field"
    if keyword == "minProperties":
        return "must set at least one field"
    if keyword == "format":
        return f"must be a valid {value}"
    return "is not valid"


def _field_problems(errors: list[ValidationError], root: str = "body") -> list[FieldProblem]:
    """One problem a field, in the order the fields were found."""
    found: dict[str, str] = {}
    for error in errors:
        path = ".".join(str(part) for part in error.absolute_path)
        if error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            names = [f"{path}.{m}" if path else m for m in missing] or [path or root]
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = (
                set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
            )
            extras = [k for k in error.instance if k not in known]
            names = [f"{path}.{k}" if path else k for k in extras] or [path or root]
        else:
            names = [path or root]
        for name in names:
            found.setdefault(name, _describe(error))
    return [FieldProblem(name, message) for name, message in found.items()]


class _Parameter:
    """One declared parameter, with its schema's checks made once."""

    def __init__(self, param: dict[str, Any]) -> None:
        self.name: str = param["name"]
        self.required = bool(param.get("required"))
        self.schema: dict[str, Any] = param.get("schema", {})
        self.kind = self.schema.get("type")
        self.check = accepts(self.schema)

    def is_valid(self, value: Any) -> bool:
        if self.check is not None and self.check(value):
            return True
        return bool(compiled(self.schema).is_valid(value))

    def problems(self, value: Any) -> list[FieldProblem]:
        errors = _errors(self.schema, value, self.check)
        return [FieldProblem(self.name, p.message) for p in _field_problems(errors, self.name)]


class ContractParameterValidator(ParameterValidator):  # type: ignore[misc]
    """Path ids: 400 ``invalid_path_param``. Query: one 422 listing every parameter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._path = [(p.name.replace("-", "_"), p) for p in self._declared("path")]
        self._query = {p.name: p for p in self._declared("query")}
        self._headers = self._declared("header")

    def _declared(self, location: str) -> list[_Parameter]:
        return [_Parameter(param) for param in self.parameters.get(location, [])]

    def validate(self, scope: Scope) -> None:
        """400 for a bad path parameter, else one 422 for every bad query or header one."""
        self.path_values(scope.get("path_params", {}))
        self.validate_query(scope)

    def path_values(self, raw_params: dict[str, Any]) -> dict[str, Any]:
        """The typed path parameters by (sanitised) name; 400 ``invalid_path_param`` if any
        is malformed or off its schema."""
        values: dict[str, Any] = {}
        for key, param in self._path:
            raw = raw_params.get(key)
            value = _coerce(param.schema, str(raw)) if raw is not None else _UNPARSED
            values[key] = value
            if value is _UNPARSED or not param.is_valid(value):
                raise HttpProblem(
                    400,
                    "invalid_path_param",
                    f"The path parameter {param.name} must be a positive integer that fits in "
                    "64 bits."
                    if param.kind == "integer"
                    else f"The path parameter {param.name} is not valid.",
                )
        return values

    def validate_query(self, scope: Scope) -> None:
        """One 422 listing every bad, unknown or missing query parameter and header."""
        problems: list[FieldProblem] = []
        query_params = QueryParams(scope["query_string"])
        declared = self._query
        for name in query_params:
            if name not in declared:
                problems.append(FieldProblem(name, "is not a known query parameter"))
        for name, param in declared.items():
            values = query_params.getlist(name)
            if not values:
                if param.required:
                    problems.append(FieldProblem(name, "is required"))
                continue
            if len(values) > 1:
                problems.append(FieldProblem(name, "must be given once"))
                continue
            value = _coerce(param.schema, values[0])
            if value is _UNPARSED:
                article = "an" if param.kind == "integer" else "a"
                problems.append(FieldProblem(name, f"must be {article} {param.kind}"))
                continue
            problems.extend(param.problems(value))
        if self._headers:
            problems.extend(self._header_problems(Headers(scope=scope)))
        if problems:
            raise validation_problem(problems)

    def _header_problems(self, headers: Headers) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        for param in self._headers:
            value = headers.get(param.name)
            if value is None:
                if param.required:
                    problems.append(FieldProblem(param.name, "is required"))
                continue
            problems.extend(param.problems(value))
        return problems


class ContractJSONBodyValidator(JSONRequestBodyValidator):  # type: ignore[misc]
    """Strict UTF-8 and JSON (400 ``malformed_body``), then every schema error as one 422."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check = accepts(self._schema)

    async def _parse(self, stream: AsyncGenerator[bytes, None], scope: Scope) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpProblem(400, "malformed_body", "The body is not valid UTF-8.") from None
        if not text.strip():
            raise HttpProblem(400, "malformed_body", "The body must be a JSON object.")
        try:
            body = json.loads(text)
            # A "\\ud800" escape parses to a lone surrogate: no database can store that text.
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise HttpProblem(400, "malformed_body", "The body is not valid Unicode.") from None
        except (ValueError, RecursionError):
            raise HttpProblem(400, "malformed_body", "The body is not valid JSON.") from None
        remember_parsed_body(scope, body)
        return body

    def _validate(self, body: Any) -> dict[str, Any] | None:
        errors = _errors(self._schema, body, self._check)
        if errors:
            raise validation_problem(_field_problems(errors))
        return None


class ContractMultipartValidator(SpooledMultipartValidator):
    """A multipart body (uploads): 400 ``malformed_body`` when it is not multipart at all,
    then every schema error (a missing ``file``, another part) as one 422."""

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        try:
            return await super().wrap_receive(receive, scope=scope)
        except MultiPartException:
            raise HttpProblem(
                400, "malformed_body", "The body is not valid multipart/form-data."
            ) from None

    def _validate(self, body: Any) -> dict[str, Any] | None:
        errors = _errors(self._schema, body, None)
        if errors:
            raise validation_problem(_field_problems(errors))
        return None


VALIDATOR_MAP: dict[str, Any] = {
    "parameter": ContractParameterValidator,
    "body": MediaTypeDict(
        {"*/*json": ContractJSONBodyValidator, "multipart/form-data": ContractMultipartValidator}
    ),
}
