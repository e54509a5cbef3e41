"""Request validation from the spec, answering the way the contract says.

Connexion's defaults answer 400 with the first error; the contract wants a bad
path id to be 400 ``invalid_path_param`` and every body or query violation to
be one 422 that lists each field. These validators plug into Connexion's
``validator_map``; the schemas they apply are the spec's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.json_schema import Draft4RequestValidator
from connexion.validators import JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.requests import Request
from starlette.types import Scope

from domain.errors import FieldProblem
from handlers.problems import HttpProblem, validation_problem

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


class ContractParameterValidator(ParameterValidator):  # type: ignore[misc]
    """Path ids: 400 ``invalid_path_param``. Query: one 422 listing every parameter."""

    def validate(self, scope: Scope) -> None:
        request = Request(scope)
        self._validate_path(scope.get("path_params", {}))
        self._validate_query(request)

    def _validate_path(self, raw_params: dict[str, Any]) -> None:
        for param in self.parameters.get("path", []):
            name = param["name"]
            raw = raw_params.get(name.replace("-", "_"))
            schema = param.get("schema", {})
            value = _coerce(schema, str(raw)) if raw is not None else _UNPARSED
            if value is _UNPARSED or not compiled(schema).is_valid(value):
                raise HttpProblem(
                    400,
                    "invalid_path_param",
                    f"The path parameter {name} must be a positive integer that fits in 64 bits."
                    if schema.get("type") == "integer"
                    else f"The path parameter {name} is not valid.",
                )

    def _validate_query(self, request: Request) -> None:
        problems: list[FieldProblem] = []
        declared = {p["name"]: p for p in self.parameters.get("query", [])}
        for name in request.query_params:
            if name not in declared:
                problems.append(FieldProblem(name, "is not a known query parameter"))
        for name, param in declared.items():
            values = request.query_params.getlist(name)
            if not values:
                if param.get("required"):
                    problems.append(FieldProblem(name, "is required"))
                continue
            if len(values) > 1:
                problems.append(FieldProblem(name, "must be given once"))
                continue
            schema = param.get("schema", {})
            value = _coerce(schema, values[0])
            if value is _UNPARSED:
                kind = schema.get("type")
                article = "an" if kind == "integer" else "a"
                problems.append(FieldProblem(name, f"must be {article} {kind}"))
                continue
            errors = list(compiled(schema).iter_errors(value))
            problems.extend(FieldProblem(name, p.message) for p in _field_problems(errors, name))
        problems.extend(self._header_problems(request))
        if problems:
            raise validation_problem(problems)

    def _header_problems(self, request: Request) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        for param in self.parameters.get("header", []):
            name = param["name"]
            value = request.headers.get(name)
            if value is None:
                if param.get("required"):
                    problems.append(FieldProblem(name, "is required"))
                continue
            errors = list(compiled(param.get("schema", {})).iter_errors(value))
            problems.extend(FieldProblem(name, p.message) for p in _field_problems(errors, name))
        return problems


class ContractJSONBodyValidator(JSONRequestBodyValidator):  # type: ignore[misc]
    """Strict UTF-8 and JSON (400 ``malformed_body``), then every schema error as one 422."""

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
        return body

    def _validate(self, body: Any) -> dict[str, Any] | None:
        errors = list(compiled(self._schema).iter_errors(body))
        if errors:
            raise validation_problem(_field_problems(errors))
        return None


VALIDATOR_MAP: dict[str, Any] = {
    "parameter": ContractParameterValidator,
    "body": MediaTypeDict({"*/*json": ContractJSONBodyValidator}),
}
