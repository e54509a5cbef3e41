"""The support desk's statistics over a time window, computed by the database.

One statement answers everything, so every number comes from one snapshot. Medians
and 90th percentiles are continuous percentiles: PostgreSQL's ``percentile_cont``;
on SQLite, which has none, the same arithmetic over ranked rows (``row_number``,
``count`` over the window): with the values sorted, ``pos = p * (n - 1)``, the
value at ``floor(pos)`` plus ``pos - floor(pos)`` of the way to the next one, in
doubles, in PostgreSQL's order of operations, so both give the same numbers on the
same rows. Durations are whole milliseconds on both (``EXTRACT(EPOCH …)`` is exact
on PostgreSQL; SQLite's ``julianday`` difference is rounded to the millisecond)
divided by 1000.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    case,
    extract,
    func,
    literal_column,
    select,
    true,
    type_coerce,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.types import NullType

from support_requests.domain.errors import FieldProblem, RuleViolation
from support_requests.storage.database import Database
from support_requests.storage.models import SupportRequest

DEFAULT_SPAN = timedelta(days=30)
PERCENTILES = (("median", "0.5"), ("p90", "0.9"))
SCORES = (1, 2, 3, 4, 5)
BACKLOG_STATUSES = ("open", "in_progress", "resolved")

_requests = cast(Table, SupportRequest.__table__)
_FIRST_MOMENT = datetime.min
_LAST_MOMENT = datetime.max.replace(microsecond=999000)


@dataclass(frozen=True)
class Window:
    """``[start, end)``, naive UTC to the millisecond."""

    start: datetime
    end: datetime


def window(start: datetime | None, end: datetime | None, *, now: datetime) -> Window:
    """The window asked for: the last 30 days by default, 30 days from (or to) the one
    bound given; a start after the end breaks the rule on ``from``."""
    if start is None and end is None:
        end = now
    if start is None:
        assert end is not None
        start = _shifted(end, -DEFAULT_SPAN)
    if end is None:
        end = _shifted(start, DEFAULT_SPAN)
    if start > end:
        raise RuleViolation([FieldProblem("from", "must not be after to")])
    return Window(start, end)


def _shifted(moment: datetime, by: timedelta) -> datetime:
    """``moment + by``, held to the years a date-time can name (1 to 9999)."""
    try:
        return moment + by
    except OverflowError:
        return _FIRST_MOMENT if by < timedelta(0) else _LAST_MOMENT


@dataclass(frozen=True)
class Percentiles:
    """A duration's median and 90th percentile, in seconds (None: nothing measured)."""

    median: float | None
    p90: float | None


@dataclass(frozen=True)
class SupportStats:
    """What the desk did in a window, and its backlog now."""

    window: Window
    opened: int
    resolved: int
    closed: int
    first_response: Percentiles
    resolution: Percentiles
    ratings_count: int
    ratings_average: float | None
    ratings_distribution: dict[int, int]
    backlog: dict[str, int]


# -- the statement ---------------------------------------------------------------------


def _within(column: Any) -> ColumnElement[bool]:
    return and_(column >= bindparam("start"), column < bindparam("end"))


def _count(condition: ColumnElement[bool]) -> Any:
    return select(func.count()).select_from(_requests).where(condition).scalar_subquery()


def _seconds(later: Any, earlier: Any, *, sqlite: bool) -> ColumnElement[float]:
    """``later - earlier`` in seconds: whole milliseconds over 1000, as a double."""
    if sqlite:
        days = func.julianday(later) - func.julianday(earlier)
        milliseconds = func.round(days * literal_column("86400000", Integer))
        return type_coerce(milliseconds.op("/")(literal_column("1000.0")), Float)
    return sql_cast(extract("epoch", later - earlier), Float)


def _double(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """A double as the driver returns it (a float): SQLAlchemy's PostgreSQL ``Float`` result
    processor needs the column's type code, which the compiled path does not pass."""
    return type_coerce(value, NullType())


def _percentiles(values: Select[Any], *, sqlite: bool, prefix: str) -> Select[Any]:
    """One row: ``{prefix}_median`` and ``{prefix}_p90`` of the column ``value`` of
    ``values`` (NULL when it has no rows)."""
    measured = values.subquery()
    if not sqlite:
        return select(
            *(
                _double(
                    func.percentile_cont(literal_column(p, Float)).within_group(measured.c.value)
                ).label(f"{prefix}_{name}")
                for name, p in PERCENTILES
            )
        ).select_from(measured)
    ranked = select(
        measured.c.value,
        (func.row_number().over(order_by=measured.c.value) - literal_column("1", Integer)).label(
            "place"
        ),
        func.count().over().label("n"),
    ).subquery()
    # Per percentile, each row's place against floor(pos): 0 for the value at it, 1 for
    # the next one; and the fraction of the way between them.
    placed_columns = []
    for name, p in PERCENTILES:
        position = literal_column(p, Float) * (ranked.c.n - literal_column("1", Integer))
        below = sql_cast(position, Integer)  # floor: the position is never negative
        placed_columns.append((ranked.c.place - below).label(f"{name}_offset"))
        placed_columns.append((position - below).label(f"{name}_fraction"))
    placed = select(ranked.c.value, *placed_columns).subquery()
    columns = []
    for name, _ in PERCENTILES:
        offset = placed.c[f"{name}_offset"]
        low = func.max(case((offset == literal_column("0", Integer), placed.c.value)))
        high = func.max(case((offset == literal_column("1", Integer), placed.c.value)))
        fraction = func.max(placed.c[f"{name}_fraction"])
        # PostgreSQL's lerp: low + fraction * (high - low); no next value when fraction is 0.
        columns.append(
            _double(low + fraction * (func.coalesce(high, low) - low)).label(f"{prefix}_{name}")
        )
    return select(*columns).select_from(placed)


def _statement(*, sqlite: bool) -> Select[Any]:
    r = _requests
    first_responses = _percentiles(
        select(_seconds(r.c.first_response_at, r.c.created_at, sqlite=sqlite).label("value")).where(
            _within(r.c.created_at), r.c.first_response_at.is_not(None)
        ),
        sqlite=sqlite,
        prefix="first_response",
    ).subquery()
    resolutions = _percentiles(
        select(_seconds(r.c.last_resolved_at, r.c.created_at, sqlite=sqlite).label("value")).where(
            _within(r.c.last_resolved_at)
        ),
        sqlite=sqlite,
        prefix="resolution",
    ).subquery()
    ratings = (
        select(
            func.count().label("ratings_count"),
            func.round(func.avg(r.c.rating_score), literal_column("2")).label("ratings_average"),
            *(
                func.count().filter(r.c.rating_score == score).label(f"score_{score}")
                for score in SCORES
            ),
        )
        .where(_within(r.c.rated_at))
        .subquery()
    )
    return (
        select(
            _count(_within(r.c.created_at)).label("opened"),
            _count(_within(r.c.last_resolved_at)).label("resolved"),
            _count(_within(r.c.closed_at)).label("closed"),
            *first_responses.c,
            *resolutions.c,
            *ratings.c,
            *(
                _count(r.c.status == literal_column(f"'{status}'")).label(f"backlog_{status}")
                for status in BACKLOG_STATUSES
            ),
        )
        .select_from(first_responses)
        .join(resolutions, true())
        .join(ratings, true())
    )


_SQLITE_STATEMENT = _statement(sqlite=True)
_POSTGRESQL_STATEMENT = _statement(sqlite=False)


def _rounded(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


class SupportStatistics:
    """The statistics of a database's support requests."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._statement = _SQLITE_STATEMENT if database.is_sqlite else _POSTGRESQL_STATEMENT

    async def read(self, asked: Window) -> SupportStats:
        """The window's counts, durations and ratings, and the backlog now; writes nothing."""
        async with self.database.reading() as connection:
            result = await connection.execute(
                self._statement, {"start": asked.start, "end": asked.end}
            )
        row = result.first()
        return SupportStats(
            window=asked,
            opened=row.opened,
            resolved=row.resolved,
            closed=row.closed,
            first_response=Percentiles(
                _rounded(row.first_response_median, 3), _rounded(row.first_response_p90, 3)
            ),
            resolution=Percentiles(
                _rounded(row.resolution_median, 3), _rounded(row.resolution_p90, 3)
            ),
            ratings_count=row.ratings_count,
            ratings_average=_rounded(row.ratings_average, 2),
            ratings_distribution={score: getattr(row, f"score_{score}") for score in SCORES},
            backlog={status: getattr(row, f"backlog_{status}") for status in BACKLOG_STATUSES},
        )
