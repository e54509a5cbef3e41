"""Guard of ``support_requests.framework.sqlalchemy_compiled`` against stock SQLAlchemy.

The statements storage runs, executed through a stock SQLAlchemy ``Connection`` and through
the driver path, give the same rows (values, field names, value types) and store the same
values, on SQLite and PostgreSQL. A SQLAlchemy release that changes what the compiler or the
types hand over fails here before it serves a request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from support_requests.framework.sqlalchemy_compiled import Statements
from support_requests.storage import attachments, idempotency, support_desk
from support_requests.storage.database import Database
from support_requests.storage.models import Base

T = TypeVar("T")
TABLES = Base.metadata.tables
REQUESTS = TABLES["support_requests"]
MESSAGES = TABLES["messages"]
EVENTS = TABLES["request_events"]
ADMINS = TABLES["admins"]
KEYS = TABLES["idempotency_records"]
COUNTERS = TABLES["rate_limit_counters"]
# An upsert that returns what it wrote (PostgreSQL's ON CONFLICT … RETURNING), on a table of
# plain columns: the shape the driver path must handle like stock SQLAlchemy.
UPSERT_COUNT = (
    postgresql.insert(COUNTERS)
    .on_conflict_do_update(
        index_elements=[COUNTERS.c.key, COUNTERS.c.window_start],
        set_={"count": COUNTERS.c.count + 1},
    )
    .returning(COUNTERS.c.count)
)
MOMENT = datetime(2026, 3, 1, 12, 30, 45, 123000)
LATER = datetime(2026, 3, 2, 8, 0, 0, 456000)


def _with_database(database_url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        database = Database(database_url)
        try:
            await database.create_schema()
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def _request(customer_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "customer_name": "Zoë ✓",
        "customer_image": None,
        "category": "technical",
        "subject": "Ünïcode and 'quotes'",
        "status": "open",
        "last_customer_message_at": MOMENT,
        "created_at": MOMENT,
        "updated_at": MOMENT,
        "version": 1,
        **changes,
    }


def _message(request_id: int, body: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "author_type": "customer",
        "author_id": "c-1",
        "author_name": None,
        "author_image": "https://example.com/a.png",
        "body": body,
        "created_at": MOMENT,
    }


def _event(request_id: int) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "type": "status_changed",
        "actor_type": "admin",
        "actor_id": "a-1",
        "at": LATER,
        "changes": {"status": {"from": "open", "to": "resolved"}, "note": None, "n": [1, 2.5]},
    }


def _seed(db: sa.Engine, customer_id: str) -> int:
    """One request with two messages, an event, an admin and an idempotency key."""
    Base.metadata.create_all(db)
    with db.begin() as connection:
        request_id = connection.execute(
            sa.insert(REQUESTS).returning(REQUESTS.c.id), _request(customer_id)
        ).scalar_one()
        connection.execute(
            sa.insert(MESSAGES), [_message(request_id, "first"), _message(request_id, "second")]
        )
        connection.execute(sa.insert(EVENTS), _event(request_id))
        connection.execute(
            sa.insert(ADMINS),
            {"id": f"a-{customer_id}", "name": "Agent", "image": None, "first_seen_at": LATER},
        )
        connection.execute(
            sa.insert(KEYS),
            {
                "owner": customer_id,
                "key": "k-1",
                "fingerprint": "f" * 64,
                "state": "done",
                "status_code": 201,
                "location": "/x/1",
                "body": b'{"id": 1}\x00\xff',
                "created_at": MOMENT,
            },
        )
    return int(request_id)


def _reads(request_id: int, customer_id: str) -> list[tuple[Any, dict[str, Any]]]:
    """The read statements storage runs, with parameters that find rows."""
    page = support_desk._page_statement(
        support_desk.REQUEST_COLUMNS, ("customer_id",), None, "-createdAt", True
    )
    versions = support_desk._page_statement(
        support_desk.VERSION_COLUMNS, ("status",), False, "-updatedAt", False
    )
    owned = {"request_id": request_id, "customer_id": customer_id}
    return [
        (support_desk._DETAIL, {"request_id": request_id}),
        (support_desk._OWNED_DETAIL, owned),
        (support_desk._LOCK_OWNED_REQUEST, owned),
        (support_desk._VERSION, {"request_id": request_id}),
        (support_desk._EVENTS, {"request_id": request_id}),
        (support_desk._ADMINS, {}),
        (
            page,
            {
                "equal_customer_id": customer_id,
                "after_moment": LATER,
                "after_id": request_id + 1,
                "rows": 5,
            },
        ),
        (versions, {"equal_status": "open", "rows": 5}),
        (idempotency._FIND, {"owner": customer_id, "key": "k-1", "live_since": MOMENT}),
        (sa.text("SELECT 1 AS one, 'two' AS two"), {}),
    ]


def _stock(db: sa.Engine, statement: Any, parameters: Any) -> list[Any]:
    with db.connect() as connection:
        result = connection.execute(statement, parameters)
        rows = result.all() if result.returns_rows else []
        connection.commit()
    return rows


def _shape(rows: list[Any]) -> list[tuple[tuple[str, ...], tuple[Any, ...], tuple[type, ...]]]:
    """What a caller sees of rows: field names, values, and value types."""
    return [(tuple(row._fields), tuple(row), tuple(type(value) for value in row)) for row in rows]


def _stored(db: sa.Engine, table: sa.Table, where: Any, *, leave_out: tuple[str, ...]) -> Any:
    with db.connect() as connection:
        rows = connection.execute(sa.select(table).where(where).order_by(*table.primary_key))
        return [
            {key: value for key, value in row._mapping.items() if key not in leave_out}
            for row in rows
        ]


def test_reads_give_the_rows_stock_sqlalchemy_gives(database_url, db):
    customer_id = f"c-{uuid.uuid4().hex}"

    async def ours(database: Database) -> list[list[Any]]:
        request_id = _seed(db, customer_id)
        read = []
        async with database.reading() as connection:
            for statement, parameters in _reads(request_id, customer_id):
                read.append((await connection.execute(statement, parameters)).all())
        return read

    driver = _with_database(database_url, ours)
    request_id = _stored(db, REQUESTS, REQUESTS.c.customer_id == customer_id, leave_out=())[0]["id"]
    for (statement, parameters), rows in zip(_reads(request_id, customer_id), driver, strict=True):
        stock = _stock(db, statement, parameters)
        assert stock, f"no rows to compare for {statement}"
        assert _shape(rows) == _shape(stock), str(statement)


def test_writes_store_what_stock_sqlalchemy_stores(database_url, db):
    """The same write through each path: equal rows stored, equal rows returned."""
    ours_customer, stock_customer = f"c-{uuid.uuid4().hex}", f"c-{uuid.uuid4().hex}"
    ours_id, stock_id = _seed(db, ours_customer), _seed(db, stock_customer)
    update = {"status": "resolved", "resolved_at": LATER, "resolution_note": "done ✓"}

    def writes(customer: str, request_id: int) -> list[tuple[Any, Any]]:
        return [
            (support_desk._INSERT_REQUEST, _request(customer, subject="second")),
            (support_desk._INSERT_MESSAGE, _message(request_id, "third ✓")),
            (support_desk._INSERT_EVENT, [_event(request_id), _event(request_id)]),
            (
                support_desk._UPDATE_REQUEST,
                {**update, "updated_at": LATER, "changed_id": request_id},
            ),
            (
                idempotency._KEEP[db.dialect.name],
                {
                    "kept_owner": customer,
                    "kept_key": "k-1",
                    "kept_fingerprint": "e" * 64,
                    "kept_state": "done",
                    "kept_status_code": 201,
                    "kept_body": b"\x00\x01",
                    "kept_location": None,
                    "kept_created_at": LATER,
                    "live_since": LATER,  # the seeded answer (MOMENT) has expired: replaced
                },
            ),
        ]

    async def ours(database: Database) -> list[tuple[list[Any], int]]:
        done = []
        async with database.writing() as connection:
            for statement, parameters in writes(ours_customer, ours_id):
                result = await connection.execute(statement, parameters)
                done.append((result.all(), result.rowcount))
        return done

    driver = _with_database(database_url, ours)
    stock = []
    with db.begin() as connection:
        for statement, parameters in writes(stock_customer, stock_id):
            result = connection.execute(statement, parameters)
            stock.append((result.all() if result.returns_rows else [], result.rowcount))

    for (_, parameters), (ours_rows, ours_count), (stock_rows, stock_count) in zip(
        writes(stock_customer, stock_id), driver, stock, strict=True
    ):
        # Counts of an INSERT … RETURNING (sqlite3 counts once fetched) or of many parameter
        # sets (SQLAlchemy batches them into one INSERT) are the driver's; storage reads
        # neither.
        if not stock_rows and not isinstance(parameters, list):
            assert ours_count == stock_count
        # Returned ids differ (two rows); their names and types do not.
        assert [(row._fields, [type(v) for v in row]) for row in ours_rows] == [
            (row._fields, [type(v) for v in row]) for row in stock_rows
        ]
    ids = ("id", "request_id", "customer_id", "owner")
    for table in (REQUESTS, MESSAGES, EVENTS, KEYS):
        ours_rows = _stored(db, table, _belongs_to(table, ours_customer, ours_id), leave_out=ids)
        stock_rows = _stored(db, table, _belongs_to(table, stock_customer, stock_id), leave_out=ids)
        assert ours_rows, table.name
        assert ours_rows == stock_rows, table.name


def _belongs_to(table: sa.Table, customer: str, request_id: int) -> Any:
    if table is REQUESTS:
        return REQUESTS.c.customer_id == customer
    if table is KEYS:
        return KEYS.c.owner == customer
    return table.c.request_id == request_id


def _postgresql_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL-only statement")


@pytest.mark.parametrize("statement", ["create", "count"])
def test_postgresql_statements_match_stock_sqlalchemy(database_url, db, statement):
    """The one-statement create (data-modifying CTEs) and an upsert returning its count."""
    _postgresql_only(database_url)
    ours_customer, stock_customer = f"c-{uuid.uuid4().hex}", f"c-{uuid.uuid4().hex}"

    def run(customer: str) -> tuple[Any, dict[str, Any]]:
        if statement == "count":
            return UPSERT_COUNT, {"key": customer, "window_start": MOMENT, "count": 1}
        device = dict.fromkeys(support_desk.DEVICE_COLUMNS.values()) | {
            "device_platform": "ios",
            "device_locale": "de-DE",
        }
        created = {**_request(customer), **device, "author_type": "customer", "body": "hello ✓"}
        event = _event(0)
        return support_desk._CREATE, {
            **created,
            "event_type": "created",
            "changes": event["changes"],
        }

    async def ours(database: Database) -> list[Any]:
        async with database.autocommit() as connection:
            await connection.execute(*run(ours_customer))
            return (await connection.execute(*run(ours_customer))).all()

    driver = _with_database(database_url, ours)
    _stock(db, *run(stock_customer))
    stock = _stock(db, *run(stock_customer))
    ids = ("id", "customer_id", "key", "message_id", "message_request_id", "message_author_id")
    assert [
        {k: v for k, v in zip(row._fields, _shape([row])[0][2], strict=True)} for row in driver
    ] == [{k: v for k, v in zip(row._fields, _shape([row])[0][2], strict=True)} for row in stock]
    assert [{k: v for k, v in row._asdict().items() if k not in ids} for row in driver] == [
        {k: v for k, v in row._asdict().items() if k not in ids} for row in stock
    ]
    if statement == "count":
        assert driver[0].count == 2


def test_statements_built_per_call_do_not_grow_the_cache_past_its_bound():
    """Compiled forms are cached by statement object, the least recently used dropped."""
    statements = Statements(sa.create_engine("sqlite://").dialect, cache_size=2)
    kept = sa.select(REQUESTS.c.id).where(REQUESTS.c.id == sa.bindparam("request_id"))
    for request_id in range(5):
        statements.prepare(kept, {"request_id": request_id})
        statements.prepare(sa.select(REQUESTS.c.id).where(REQUESTS.c.id == request_id), None)
    cache = statements.cache_info()
    assert (cache.currsize, cache.hits, cache.misses) == (2, 4, 6)


def test_a_statement_needing_the_execution_context_is_refused():
    """A Python-side default (``version``) would need SQLAlchemy's execution context."""
    statements = Statements(sa.create_engine("sqlite://").dialect)
    without_version = _request("c-1")
    del without_version["version"]
    with pytest.raises(NotImplementedError, match="needs SQLAlchemy's execution"):
        statements.prepare(sa.insert(REQUESTS), without_version)


def test_binary_results_give_the_bytes_the_text_path_gives(database_url, db):
    """``execution_options(binary_results=True)`` (the attachment chunks' read): PostgreSQL
    sends bytea as it is stored rather than as hex text, and the rows are the same bytes
    and types as stock SQLAlchemy's; on SQLite it changes nothing."""
    payload = bytes(range(256)) * 1024 + b"\x00tail"
    echoed = sa.select(sa.bindparam("data", type_=sa.LargeBinary).label("data"))
    binary = echoed.execution_options(binary_results=True)

    async def ours(database: Database) -> list[Any]:
        async with database.autocommit() as connection:
            return [
                (await connection.execute(statement, {"data": payload})).all()
                for statement in (echoed, binary)
            ]

    text_rows, binary_rows = _with_database(database_url, ours)
    stock = _stock(db, echoed, {"data": payload})
    assert _shape(binary_rows) == _shape(text_rows) == _shape(stock)
    assert binary_rows[0].data == payload
    statements = Statements(db.dialect)
    assert statements.prepare(binary, {"data": payload})[0].binary
    assert not statements.prepare(echoed, {"data": payload})[0].binary
    chunks = attachments._CHUNKS
    assert statements.prepare(chunks, {"attachment_id": "a", "first_seq": 0, "last_seq": 1})[
        0
    ].binary
