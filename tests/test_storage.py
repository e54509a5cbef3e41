"""Storage-level rules, on ``SupportDesk`` directly: transactions, statement counts, indexes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from support_requests.domain.errors import NotFound
from support_requests.domain.lifecycle import Actor
from support_requests.domain.principal import Principal
from support_requests.storage.database import STATEMENT_OBSERVERS
from support_requests.storage.models import Base
from support_requests.storage.support_desk import SupportDesk
from tests.helpers import (
    TRANSACTION_CONTROL,
    customer_principal,
    refusing_message_inserts,
    with_desk,
)

T = TypeVar("T")
TABLES = Base.metadata.tables
REQUESTS = TABLES["support_requests"]
LIST_INDEX = "ix_support_requests_customer_created"


class StatementLog:
    """The SQL statements (not transaction control) the driver runs while listening."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.listening = False

    def __call__(self, statement: str, parameters: Any) -> None:
        if self.listening and not statement.lstrip().upper().startswith(TRANSACTION_CONTROL):
            self.statements.append((statement, parameters))

    async def during(self, work: Awaitable[T]) -> T:
        self.statements.clear()
        self.listening = True
        STATEMENT_OBSERVERS.append(self)
        try:
            return await work
        finally:
            STATEMENT_OBSERVERS.remove(self)
            self.listening = False


def _count(db: sa.Engine, table: str) -> int:
    with db.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(TABLES[table])) or 0


def test_create_is_one_transaction(database_url, db):
    """A failing message insert leaves neither the request nor its event behind."""

    async def refused(desk: SupportDesk) -> None:
        with pytest.raises(sa.exc.DBAPIError, match="refused by the test"):
            await desk.create_request(
                customer_principal(), category="other", subject="s", message="m"
            )

    async def accepted(desk: SupportDesk) -> None:
        # Nothing was left locked or half-written: the next create succeeds.
        await desk.create_request(customer_principal(), category="other", subject="ok", message="m")

    with_desk(database_url, lambda desk: asyncio.sleep(0))  # create the schema
    with refusing_message_inserts(db):
        with_desk(database_url, refused)
    with_desk(database_url, accepted)

    assert _count(db, "support_requests") == 1
    assert _count(db, "messages") == 1
    assert _count(db, "request_events") == 1
    with db.connect() as connection:
        assert connection.scalar(sa.select(REQUESTS.c.subject)) == "ok"


def test_list_is_one_statement_and_detail_at_most_two(database_url):
    alice = customer_principal()
    log = StatementLog()

    async def work(desk: SupportDesk) -> dict[str, Any]:
        ids = []
        for index in range(5):
            record = await desk.create_request(
                alice, category="technical", subject=f"s{index}", message="first"
            )
            ids.append(record.row.id)
        for body in ("second", "third", "fourth"):
            await desk.reply_as_customer(alice, ids[0], body)
        await desk.create_request(customer_principal(), category="other", subject="x", message="y")

        first_page = await log.during(
            desk.list_for_customer(alice, limit=3, cursor=None, status=None)
        )
        list_statements = list(log.statements)
        second_page = await log.during(
            desk.list_for_customer(alice, limit=3, cursor=first_page.next_cursor, status=None)
        )
        cursor_statements = list(log.statements)
        filtered = await log.during(
            desk.list_for_customer(alice, limit=100, cursor=None, status="open")
        )
        filtered_statements = list(log.statements)
        detail = await log.during(desk.get_for_customer(alice, ids[0]))
        detail_statements = list(log.statements)
        return {
            "pages": [first_page, second_page, filtered],
            "counts": [len(list_statements), len(cursor_statements), len(filtered_statements)],
            "detail": detail,
            "detail_count": len(detail_statements),
        }

    result = with_desk(database_url, work)

    first_page, second_page, filtered = result["pages"]
    assert [len(first_page.records), len(second_page.records), len(filtered.records)] == [3, 2, 5]
    assert second_page.next_cursor is None
    assert result["counts"] == [1, 1, 1]
    assert [m.body for m in result["detail"].messages] == ["first", "second", "third", "fourth"]
    assert 1 <= result["detail_count"] <= 2


def test_another_customers_request_is_not_found_and_nothing_is_written(database_url, db):
    owner, stranger = customer_principal(), customer_principal()

    async def work(desk: SupportDesk) -> int:
        record = await desk.create_request(owner, category="other", subject="s", message="m")
        with pytest.raises(NotFound) as read:
            await desk.get_for_customer(stranger, record.row.id)
        with pytest.raises(NotFound) as reply:
            await desk.reply_as_customer(stranger, record.row.id, "mine now")
        assert str(record.row.id) in read.value.detail
        assert read.value.detail == reply.value.detail
        return int(record.row.id)

    request_id = with_desk(database_url, work)

    with db.connect() as connection:
        bodies = connection.scalars(
            sa.select(TABLES["messages"].c.body).where(
                TABLES["messages"].c.request_id == request_id
            )
        ).all()
    assert bodies == ["m"]
    assert _count(db, "request_events") == 1


# -- the list query uses its index ----------------------------------------------------------


def _fill(db: sa.Engine, customers: int, per_customer: int) -> list[str]:
    """Many requests from many customers, written straight to the table."""
    start = datetime(2026, 1, 1)
    subs = [f"customer-{uuid.uuid4().hex}" for _ in range(customers)]
    rows = []
    for number in range(customers * per_customer):
        moment = start + timedelta(seconds=number)
        rows.append(
            {
                "customer_id": subs[number % customers],
                "customer_name": None,
                "customer_image": None,
                "category": "technical",
                "subject": f"request {number}",
                "status": ("open", "in_progress", "resolved", "closed")[number % 4],
                "created_at": moment,
                "updated_at": moment,
                "last_customer_message_at": moment,
                "version": 1,
            }
        )
    with db.begin() as connection:
        connection.execute(sa.insert(REQUESTS), rows)
    return subs


def _captured_list_query(database_url: str, sub: str, *, with_cursor: bool) -> tuple[str, Any]:
    log = StatementLog()
    customer = Principal(sub=sub, role=Actor.CUSTOMER)

    async def work(desk: SupportDesk) -> tuple[str, Any]:
        cursor = None
        if with_cursor:
            page = await desk.list_for_customer(customer, limit=5, cursor=None, status=None)
            cursor = page.next_cursor
            assert cursor is not None
        await log.during(desk.list_for_customer(customer, limit=5, cursor=cursor, status=None))
        assert len(log.statements) == 1
        return log.statements[0]

    return with_desk(database_url, work)


def _plan(db: sa.Engine, statement: str, parameters: Any, *, sqlite: bool) -> str:
    """The planner's own choice (no planner settings forced) for the captured statement."""
    with db.connect() as connection:
        if sqlite:
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return "\n".join(str(row[-1]) for row in rows)
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return "\n".join(str(row[0]) for row in rows)


@pytest.mark.parametrize("with_cursor", [False, True], ids=["first-page", "next-page"])
def test_list_query_uses_the_customer_index(database_url, db, with_cursor):
    sqlite = database_url.startswith("sqlite")
    with_desk(database_url, lambda desk: asyncio.sleep(0))  # create the schema
    subs = _fill(db, customers=200, per_customer=25)
    if not sqlite:
        with db.begin() as connection:
            connection.exec_driver_sql("ANALYZE support_requests")

    statement, parameters = _captured_list_query(database_url, subs[7], with_cursor=with_cursor)
    plan = _plan(db, statement, parameters, sqlite=sqlite)

    assert LIST_INDEX in plan, plan
    if sqlite:
        assert "TEMP B-TREE" not in plan, plan
        assert "SCAN support_requests" not in plan.replace(f"USING INDEX {LIST_INDEX}", ""), plan
    else:
        assert "Seq Scan" not in plan, plan
        assert "Sort" not in plan, plan


def test_a_statement_that_fails_fails_its_whole_write_and_the_connection_recovers(database_url, db):
    """A failing statement rolls back what the transaction wrote before it."""
    admins = TABLES["admins"]
    seen = datetime(2026, 1, 1)

    async def work(desk: SupportDesk) -> None:
        with pytest.raises(sa.exc.IntegrityError):
            async with desk.database.writing() as connection:
                await connection.execute(
                    sa.insert(admins),
                    {"id": "first", "name": None, "image": None, "first_seen_at": seen},
                )
                message = {
                    "request_id": 987_654,  # no such request: a foreign-key violation
                    "author_type": "customer",
                    "author_id": "someone",
                    "author_name": None,
                    "author_image": None,
                    "body": "orphan",
                    "created_at": seen,
                }
                await connection.execute(sa.insert(TABLES["messages"]), message)
                await connection.execute(sa.select(sa.func.count()).select_from(admins))
        # The connection is usable again, and the next transaction commits.
        async with desk.database.writing() as connection:
            await connection.execute(
                sa.insert(admins),
                {"id": "second", "name": None, "image": None, "first_seen_at": seen},
            )

    with_desk(database_url, work)

    with db.connect() as connection:
        assert connection.scalars(sa.select(TABLES["admins"].c.id)).all() == ["second"]
    assert _count(db, "messages") == 0


def _size(path: str) -> int:
    return Path(path).stat().st_size


@pytest.mark.slow
def test_the_sqlite_wal_stays_bounded_under_continuous_writes_and_reads(tmp_path):
    """Writes interleaved with reads (a busy server): the WAL is checkpointed and restarts,
    so its file stays near SQLite's 1,000-page threshold instead of growing with the data."""
    path = tmp_path / "busy.db"
    alice = customer_principal()

    async def work(desk: SupportDesk) -> int:
        ids = [
            (await desk.create_request(alice, category="other", subject="s", message="m")).row.id
            for _ in range(20)
        ]
        largest = 0
        for number in range(3_000):
            await desk.reply_as_customer(alice, ids[number % 20], "a reply of some length " * 8)
            await desk.get_for_customer(alice, ids[0])
            largest = max(largest, _size(f"{path}-wal"))
        return largest

    largest_wal = with_desk(f"sqlite:///{path}", work)

    assert largest_wal < 8 * 1024 * 1024, largest_wal  # 3,000 replies write ~70 MB of WAL frames
    assert path.stat().st_size < 16 * 1024 * 1024
