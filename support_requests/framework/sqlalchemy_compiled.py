"""SQLAlchemy Core statements run by the driver without SQLAlchemy's execution machinery.

Replaces, for speed, what SQLAlchemy 2.1 (tested on 2.1.9) does between ``Connection.execute``
and the driver's cursor: the compiled cache lookup (``Connection._execute_clauseelement``),
bind processing (``DefaultExecutionContext._init_compiled``) and result processing
(``CursorResultMetaData``). That path costs 100-300 µs per statement, more than a query on a
local database; this one costs tens.

Only public APIs are used: ``ClauseElement.compile(dialect=..., column_keys=...)``, the
compiled statement's ``string``, ``positional``/``positiontup``, ``bind_names`` and
``construct_params``, ``ReturnsRows.exported_columns``, and ``TypeEngine.dialect_impl`` with
its ``bind_processor``/``result_processor``. What is ours, and what
``tests/test_framework_sqlalchemy.py`` holds against stock ``Connection`` results on SQLite
and PostgreSQL:

- A statement is compiled once per dialect and set of parameter names, cached by the
  statement object itself: storage code builds each statement once (at import, or once per
  shape of a listing). SQLAlchemy caches by a structural key, so that statements built per
  call hit the cache too; a statement built per call here compiles per call. The cache is
  bounded like SQLAlchemy's (500 entries by default), least recently used dropped, so
  statements built per call cannot grow it; its 1,024 entries exceed storage's statements
  times their shapes.
- Result processors are asked for without the driver's type code (SQLAlchemy passes the
  cursor description's ``type_code``): the types storage uses do not look at it.
- Statements that need the execution context (Python-side column defaults, expanding ``IN``
  lists, literal-execute parameters, escaped parameter names) are refused, not run wrongly.

The dependency is bounded to the minor version tested (``SQLAlchemy<2.2`` in pyproject.toml).
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

Parameters = dict[str, Any] | list[dict[str, Any]] | None


class CompiledStatement(NamedTuple):
    """One statement compiled for one dialect, with what turns values into rows."""

    compiled: SQLCompiler
    sql: str
    binds: dict[str, Callable[[Any], Any]]
    positions: tuple[str, ...] | None
    row: Any  # a namedtuple class, or None when the driver's description names the columns
    results: tuple[tuple[int, Callable[[Any], Any]], ...]
    # ``execution_options(binary_results=True)``: the driver asks for the rows in binary
    # (PostgreSQL: bytea as sent, not hex text that the server encodes and the client decodes).
    binary: bool = False


class Statements:
    """Core statements compiled once per dialect, and their driver parameters and rows."""

    def __init__(self, dialect: Dialect, *, cache_size: int = 1024) -> None:
        self.dialect = dialect
        # Keyed by the statement object (its hash is its identity) and held, so that no other
        # statement takes its id while it is cached.
        self._compiled = functools.lru_cache(maxsize=cache_size)(self._compile)
        self.cache_info = self._compiled.cache_info

    def prepare(
        self, statement: Executable, parameters: Parameters
    ) -> tuple[CompiledStatement, list[Any]]:
        """The compiled statement and, per parameter set, the values the driver takes."""
        many = parameters if isinstance(parameters, list) else [parameters or {}]
        column_keys = tuple(many[0])
        prepared = self._compiled(statement, column_keys)
        compiled = prepared.compiled
        binds = prepared.binds
        values: list[Any] = []
        for given in many:
            full = compiled.construct_params(given)
            if prepared.positions is not None:
                values.append(
                    tuple(
                        binds[name](full[name]) if name in binds else full[name]
                        for name in prepared.positions
                    )
                )
            else:
                values.append(
                    {
                        name: binds[name](value) if name in binds else value
                        for name, value in full.items()
                    }
                )
        return prepared, values

    def _compile(self, statement: Executable, column_keys: tuple[str, ...]) -> CompiledStatement:
        dialect = self.dialect
        compiled = statement.compile(  # type: ignore[attr-defined]
            dialect=dialect, column_keys=list(column_keys)
        )
        if (
            compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.escaped_bind_names
        ):
            # Python-side defaults, expanding IN lists and escaped names need SQLAlchemy's
            # execution context; storage code gives every value and uses none of them.
            raise NotImplementedError(f"statement needs SQLAlchemy's execution: {compiled}")
        binds = {
            name: processor
            for bind, name in compiled.bind_names.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        columns = getattr(statement, "exported_columns", ())
        row = namedtuple("Row", list(columns.keys()), rename=True) if columns else None
        results = tuple(
            (index, processor)
            for index, column in enumerate(columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
            is not None
        )
        positions = tuple(compiled.positiontup) if compiled.positional else None
        binary = bool(statement.get_execution_options().get("binary_results", False))
        return CompiledStatement(compiled, compiled.string, binds, positions, row, results, binary)


def rows(prepared: CompiledStatement, description: Any, fetched: Sequence[Any]) -> list[Any]:
    """The driver's fetched rows as named tuples, through the types' result processors;
    ``description`` names the columns of a statement that does not (textual SQL)."""
    if not fetched:
        return []
    row: Any = prepared.row or namedtuple("Row", [column[0] for column in description], rename=True)
    if not prepared.results:
        return [row._make(values) for values in fetched]
    processed = []
    for values in fetched:
        values = list(values)
        for index, processor in prepared.results:
            values[index] = processor(values[index])
        processed.append(row._make(values))
    return processed
