"""Bulk-load a database with many other customers' requests, for the scale case.

An operator's benchmark tool: it writes straight into the database, bypassing the API
(a million requests through the API would take hours), into the service's own tables
as ``storage.models`` declares them. Each preloaded request gets ``messages_per_request``
messages (customer and staff taking turns) and its ``created`` event, with consistent
statuses, times and assignees, so every API operation reads it as it would a real one.
Most come with the device they were opened from (platform, app version), about a quarter
carry tags (one row each in ``request_tags``) and a quarter of the resolved and closed ones
a rating, so that the queue's filters find what they would on a real desk.

- PostgreSQL: ``COPY ... FROM STDIN`` in one transaction holding an EXCLUSIVE lock on
  ``support_requests`` (reads go on, the deployment's writes wait), then
  ``VACUUM (ANALYZE)``.
- SQLite: the driver's ``executemany`` in batches, all in one transaction, then
  ``ANALYZE``. The database is locked for writes meanwhile: load a quiet one.

Both take the same rows, already in the text form the service stores (times as
``YYYY-MM-DD HH:MM:SS.ffffff`` UTC, JSON as text), so that no per-value conversion
runs in Python beyond building the row. Request ids are given explicitly, after the
highest in use (and, on PostgreSQL, the sequence's last value), so that messages and
events can point at them; the sequence is moved past them afterwards.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from support_requests.storage.database import sync_url
from support_requests.storage.models import (
    Admin,
    Message,
    RequestEvent,
    RequestTag,
    SupportRequest,
)

REQUESTS = cast(sa.Table, SupportRequest.__table__)
TAGS = cast(sa.Table, RequestTag.__table__)
MESSAGES = cast(sa.Table, Message.__table__)
EVENTS = cast(sa.Table, RequestEvent.__table__)
ADMINS = cast(sa.Table, Admin.__table__)

CATEGORIES = ("account", "payment", "technical", "other")
# Of every 10 requests: 1 open, 1 in progress, 2 resolved, 6 closed (an old desk's shape).
STATUSES = ("open", "in_progress", "resolved", "resolved") + ("closed",) * 6
REQUESTS_PER_CUSTOMER = 20
ADMIN_NAMES = tuple(f"Preload Agent {n}" for n in range(1, 6))
ADMIN_NAMESPACE = uuid.UUID("5f0f8a52-6a57-4f1e-9a54-0c8f2ab1d6e3")
BATCH = 10_000  # requests per batch, with their messages and events
# The preloaded requests' customers' badges: the sums of their unread counts, added to any
# badge they already have (a second preload reuses the customer ids).
ADD_BADGES = sa.text(
    "INSERT INTO customer_inboxes (customer_id, unread_count, requests_with_unread)"
    " SELECT customer_id, sum(unread_count), count(*) FROM support_requests"
    " WHERE id BETWEEN :first AND :last AND unread_count > 0 GROUP BY customer_id"
    " ON CONFLICT (customer_id) DO UPDATE SET"
    " unread_count = customer_inboxes.unread_count + excluded.unread_count,"
    " requests_with_unread = customer_inboxes.requests_with_unread"
    " + excluded.requests_with_unread"
)
# Of every 10 requests: 4 from iOS, 3 from Android, 1 from the web, 2 with no device sent.
PLATFORMS = ("ios", "android", "ios", "android", "web", "ios", "android", "ios", None, None)
APP_VERSIONS = tuple(f"4.{minor}.{patch}" for minor in range(8) for patch in range(3))
OS_VERSIONS = {"ios": "18.2", "android": "15", "web": "Chrome 131"}
MODELS = {"ios": "iPhone15,3", "android": "Pixel 8", "web": None}
# Of every 12 requests, the tags they carry (a quarter carry some).
TAG_SETS: tuple[tuple[str, ...], ...] = (
    ("bug",),
    (),
    (),
    ("bug-ios", "crash"),
    (),
    (),
    ("billing", "vip"),
    (),
    (),
    (),
    (),
    (),
)


@dataclass(frozen=True)
class PreloadResult:
    """What was written, and how long it took."""

    requests: int
    messages: int
    events: int
    first_id: int
    last_id: int
    load_seconds: float
    analyze_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON values."""
        return asdict(self)


@dataclass
class Batch:
    """Rows for the three tables, each row a tuple in the order of ``columns``."""

    requests: list[tuple[Any, ...]]
    messages: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    tags: list[tuple[Any, ...]]


def columns_of(table: sa.Table) -> tuple[str, ...]:
    """The columns a preloaded row fills: all of the model's, but a generated id."""
    return tuple(c.name for c in table.columns if table in (REQUESTS, TAGS) or c.name != "id")


def preload(
    database_url: str,
    requests: int,
    messages_per_request: int = 5,
    *,
    progress: Callable[[str], None] = print,
) -> PreloadResult:
    """Insert ``requests`` support requests, their messages and events, into the database."""
    if requests < 1 or messages_per_request < 1:
        raise ValueError("preload needs at least one request with at least one message")
    engine = sa.create_engine(sync_url(database_url))
    try:
        load = _load_postgresql if engine.dialect.name == "postgresql" else _load_sqlite
        started = time.monotonic()
        first_id = load(engine, requests, messages_per_request, progress)
        loaded = time.monotonic()
        progress("preload: analyzing the tables")
        _analyze(engine)
        analyzed = time.monotonic()
    finally:
        engine.dispose()
    return PreloadResult(
        requests=requests,
        messages=requests * messages_per_request,
        events=requests,
        first_id=first_id,
        last_id=first_id + requests - 1,
        load_seconds=round(loaded - started, 2),
        analyze_seconds=round(analyzed - loaded, 2),
    )


# -- rows ------------------------------------------------------------------------------


def _admins() -> list[dict[str, Any]]:
    seen = datetime.now(UTC).replace(tzinfo=None)
    return [
        {"id": str(uuid.uuid5(ADMIN_NAMESPACE, name)), "name": name, "first_seen_at": seen}
        for name in ADMIN_NAMES
    ]


def _stamp(moment: datetime) -> str:
    """A time as the service stores it (SQLAlchemy's SQLite format, PostgreSQL's input)."""
    return moment.isoformat(" ", "microseconds")


def _batches(first_id: int, requests: int, messages_per_request: int) -> Iterator[Batch]:
    """BATCH requests at a time, oldest first, with their messages and events.

    The requests spread over the past year, each customer's interleaved with the others'
    as real traffic is; a thread's messages follow its creation minute by minute.
    """
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    start = now - timedelta(days=365)
    step = timedelta(milliseconds=max(1, (364 * 86_400_000) // requests))
    minute = timedelta(minutes=1)
    customers = max(1, requests // REQUESTS_PER_CUSTOMER)
    admins = [(admin["id"], admin["name"]) for admin in _admins()]
    order = {table.name: columns_of(table) for table in (REQUESTS, MESSAGES, EVENTS, TAGS)}
    checked = False
    for batch_start in range(0, requests, BATCH):
        batch = Batch([], [], [], [])
        for n in range(batch_start, min(requests, batch_start + BATCH)):
            request_id = first_id + n
            customer_id = f"preload-{n % customers:07d}"
            customer_name = f"Preload Customer {n % customers}"
            category = CATEGORIES[n % len(CATEGORIES)]
            subject = f"Preloaded request {request_id}"
            status = STATUSES[n % len(STATUSES)]
            created = start + n * step
            admin_id, admin_name = (None, None) if status == "open" else admins[n % len(admins)]
            last_customer = last_admin = first_admin = None
            admin_messages = 0
            messages = []
            for k in range(messages_per_request):
                at = _stamp(created + k * minute)
                if k % 2 == 1 and admin_id is not None:
                    last_admin = at
                    first_admin = first_admin or at
                    admin_messages += 1
                    author_type, author_id, author_name = "admin", admin_id, admin_name
                else:
                    last_customer = at
                    author_type, author_id, author_name = "customer", customer_id, customer_name
                messages.append(
                    {
                        "request_id": request_id,
                        "author_type": author_type,
                        "author_id": author_id,
                        "author_name": author_name,
                        "author_image": None,
                        "body": f"Message {k + 1} about request {request_id}: the app shows an "
                        "error when I open my orders.",
                        "created_at": at,
                        "internal": False,
                    }
                )
            updated = _stamp(created + messages_per_request * minute)
            platform = PLATFORMS[n % len(PLATFORMS)]
            tags = TAG_SETS[n % len(TAG_SETS)]
            rated = status in ("resolved", "closed") and n % 4 == 1
            version = messages_per_request + (status != "open") + bool(tags)
            request = {
                "id": request_id,
                "customer_id": customer_id,
                "customer_name": customer_name,
                "customer_image": None,
                "category": category,
                "subject": subject,
                "status": status,
                "assigned_admin_id": admin_id,
                "resolution_note": "Fixed in the latest app version."
                if status == "resolved"
                else None,
                "resolved_at": updated if status == "resolved" else None,
                "closed_at": updated if status == "closed" else None,
                "last_customer_message_at": last_customer,
                "last_admin_message_at": last_admin,
                "created_at": _stamp(created),
                "updated_at": updated,
                "version": version,
                "attachment_count": 0,  # preloaded messages carry no attachments
                "customer_version": version - bool(tags),  # tags are staff-only
                "device_platform": platform,
                "device_os_version": platform and OS_VERSIONS[platform],
                "device_app_version": platform and APP_VERSIONS[(n // 10) % len(APP_VERSIONS)],
                "device_app_build": platform and str(1000 + (n // 10) % len(APP_VERSIONS)),
                "device_model": platform and MODELS[platform],
                "device_locale": platform and ("en-US", "de-DE", "pt-BR")[n % 3],
                "device_time_zone": platform
                and ("America/New_York", "Europe/Berlin", "America/Sao_Paulo")[n % 3],
                # Nothing read yet: every staff message is unread.
                "customer_last_read_message_id": None,
                "unread_count": admin_messages,
                "first_response_at": first_admin,
                "last_resolved_at": updated if status in ("resolved", "closed") else None,
                "rating_score": 1 + (n // 4) % 5 if rated else None,
                "rating_comment": "Quick and friendly." if rated and n % 8 == 1 else None,
                "rated_at": updated if rated else None,
                "tags": json.dumps(list(tags)),
            }
            changes = {
                "status": {"from": None, "to": "open"},
                "category": {"from": None, "to": category},
                "subject": {"from": None, "to": subject},
            }
            event = {
                "request_id": request_id,
                "type": "created",
                "actor_type": "customer",
                "actor_id": customer_id,
                "at": _stamp(created),
                "changes": json.dumps(changes),
            }
            if not checked:  # a column added to the models must be filled here too
                for name, row in (("support_requests", request), ("messages", messages[0])):
                    _check_columns(name, row, order[name])
                _check_columns("request_events", event, order["request_events"])
                checked = True
            batch.requests.append(tuple(request[c] for c in order["support_requests"]))
            batch.messages.extend(tuple(m[c] for c in order["messages"]) for m in messages)
            batch.events.append(tuple(event[c] for c in order["request_events"]))
            batch.tags.extend((request_id, tag, request["created_at"]) for tag in tags)
        yield batch


def _check_columns(table: str, row: dict[str, Any], columns: tuple[str, ...]) -> None:
    if set(row) != set(columns):
        raise RuntimeError(
            f"bench/preload.py is out of date with storage.models: {table} has "
            f"{sorted(columns)}, the preload fills {sorted(row)}"
        )


# -- PostgreSQL ------------------------------------------------------------------------


def _load_postgresql(
    engine: sa.Engine, requests: int, messages_per_request: int, progress: Callable[[str], None]
) -> int:
    with engine.begin() as connection:
        connection.execute(sa.text(f"LOCK TABLE {REQUESTS.name} IN EXCLUSIVE MODE"))
        sequence = connection.execute(
            sa.text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": REQUESTS.name}
        ).scalar_one()
        issued = connection.execute(sa.text(f"SELECT last_value FROM {sequence}")).scalar_one()
        first_id = max(_highest_id(connection), int(issued)) + 1
        connection.execute(postgresql.insert(ADMINS).values(_admins()).on_conflict_do_nothing())
        raw = connection.connection.driver_connection
        assert raw is not None
        done = 0
        with raw.cursor() as cursor:
            for batch in _batches(first_id, requests, messages_per_request):
                for table, rows in (
                    (REQUESTS, batch.requests),
                    (MESSAGES, batch.messages),
                    (EVENTS, batch.events),
                    (TAGS, batch.tags),
                ):
                    copy_sql = f"COPY {table.name} ({', '.join(columns_of(table))}) FROM STDIN"
                    with cursor.copy(copy_sql) as copy:
                        for row in rows:
                            copy.write_row(row)
                done += len(batch.requests)
                progress(f"preload: {done:,} / {requests:,} requests")
        connection.execute(
            sa.text("SELECT setval(CAST(:sequence AS regclass), :last)"),
            {"sequence": sequence, "last": first_id + requests - 1},
        )
        connection.execute(ADD_BADGES, {"first": first_id, "last": first_id + requests - 1})
    return first_id


# -- SQLite ----------------------------------------------------------------------------


def _load_sqlite(
    engine: sa.Engine, requests: int, messages_per_request: int, progress: Callable[[str], None]
) -> int:
    with engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MiB for the indexes
        first_id = _highest_id(connection) + 1
        connection.execute(sqlite.insert(ADMINS).values(_admins()).on_conflict_do_nothing())
        statements = {
            table.name: f"INSERT INTO {table.name} ({', '.join(columns_of(table))}) "
            f"VALUES ({', '.join('?' * len(columns_of(table)))})"
            for table in (REQUESTS, MESSAGES, EVENTS, TAGS)
        }
        done = 0
        for batch in _batches(first_id, requests, messages_per_request):
            connection.exec_driver_sql(statements[REQUESTS.name], batch.requests)
            connection.exec_driver_sql(statements[MESSAGES.name], batch.messages)
            connection.exec_driver_sql(statements[EVENTS.name], batch.events)
            if batch.tags:
                connection.exec_driver_sql(statements[TAGS.name], batch.tags)
            done += len(batch.requests)
            progress(f"preload: {done:,} / {requests:,} requests")
        connection.execute(ADD_BADGES, {"first": first_id, "last": first_id + requests - 1})
    return first_id


def _highest_id(connection: sa.Connection) -> int:
    highest = sa.select(sa.func.coalesce(sa.func.max(REQUESTS.c.id), 0))
    return int(connection.execute(highest).scalar_one())


def _analyze(engine: sa.Engine) -> None:
    if engine.dialect.name == "postgresql":
        tables = ", ".join(t.name for t in (REQUESTS, MESSAGES, EVENTS, TAGS))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"VACUUM (ANALYZE) {tables}")
    else:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
