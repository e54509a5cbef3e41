"""Engine set-up and the two kinds of transaction the service uses.

SQLite: WAL, a busy timeout, and write transactions that ``BEGIN IMMEDIATE``
behind one in-process lock, so writers queue without busy-wait sleeping and
never fail on a lock upgrade. PostgreSQL: psycopg 3, a pre-pinged pool, and
``SELECT … FOR UPDATE`` on the request row inside each write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage.models import Base

SQLITE_BUSY_TIMEOUT_MS = 30_000


def async_url(url: str) -> URL:
    """The async driver's URL for a SQLite or PostgreSQL URL as operators write it."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")


def sync_url(url: str) -> URL:
    """The blocking driver's URL, for operator commands and migrations."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")


def _prepare_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """The engine plus the read and write transaction scopes."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        target = async_url(url)
        self.is_sqlite = target.get_backend_name() == "sqlite"
        options: dict[str, Any] = {"pool_pre_ping": True}
        if self.is_sqlite:
            if target.database and target.database != ":memory:":
                Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            options.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine = create_async_engine(target, **options)
        if self.is_sqlite:
            _prepare_sqlite(self.engine)
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction, rolled back at the end."""
        async with self.engine.connect() as connection:
            yield connection

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if self.is_sqlite:
            async with self._write_lock, self.engine.connect() as connection:
                await connection.execution_options(sqlite_begin="IMMEDIATE")
                async with connection.begin():
                    yield connection
        else:
            async with self.engine.begin() as connection:
                yield connection

    async def create_schema(self) -> None:
        """Create every table that does not exist yet."""
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
