"""Engine set-up and the two kinds of transaction the service uses.

PostgreSQL: psycopg 3 through SQLAlchemy's async engine, a pre-pinged pool,
and ``SELECT … FOR UPDATE`` on the request row inside each write.

SQLite: the blocking sqlite3 driver called inline on the event loop. A query on
a local file takes tens of microseconds, far less than a hop to a driver
thread, and WAL lets reads run beside the one writer. Writes ``BEGIN
IMMEDIATE`` behind one in-process asyncio lock, so writers of this process
queue without busy-wait sleeping and never fail on a lock upgrade; the busy
timeout only arbitrates between processes.

Both paths hand the storage code a ``DbConnection``: ``await connection.execute(…)``
works the same on each.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from storage.models import Base

SQLITE_BUSY_TIMEOUT_MS = 30_000


def sync_url(url: str) -> URL:
    """The driver URL for a SQLite or PostgreSQL URL as operators write it.

    ``postgresql+psycopg`` serves the async engine as well: SQLAlchemy takes psycopg's
    async side when the engine is created with ``create_async_engine``.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")


class DbConnection(Protocol):
    """What storage code needs of a connection, on either database."""

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Run a statement; the result is fully available without further awaits."""

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        """The first column of the first row, or None."""

    def begin_nested(self) -> Any:
        """A savepoint, as an async context manager."""

    async def run_sync(self, fn: Callable[[Connection], Any]) -> Any:
        """Call ``fn`` with the underlying blocking connection."""


class _InlineConnection:
    """A blocking SQLAlchemy connection behind the ``DbConnection`` interface."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        return self._connection.execute(statement, parameters)

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        return self._connection.scalar(statement, parameters)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        with self._connection.begin_nested():
            yield

    async def run_sync(self, fn: Callable[[Connection], Any]) -> Any:
        return fn(self._connection)


def _prepare_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """The engine plus the read and write transaction scopes."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    ) -> None:
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        self._write_lock = asyncio.Lock()
        if self.is_sqlite:
            target = sync_url(url)
            if target.database and target.database != ":memory:":
                Path(target.database).parent.mkdir(parents=True, exist_ok=True)
            # A local file does not drop connections: no pre-ping round trip per checkout.
            self.sync_engine = create_engine(target, pool_size=pool_size, max_overflow=pool_size)
            _prepare_sqlite(self.sync_engine, sqlite_busy_timeout_ms)
            self._async_engine = None
        else:
            self._async_engine = create_async_engine(
                sync_url(url),
                pool_pre_ping=True,
                # A fixed pool: overflow connections are opened and closed per burst, and a
                # PostgreSQL connection costs milliseconds to open (the benchmark saw 40 a
                # second); requests beyond the pool wait for a connection instead.
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=10,
                connect_args={"connect_timeout": 5},
            )
            self.sync_engine = self._async_engine.sync_engine
            # Reads are single statements (the detail joins its thread), and one statement
            # sees one snapshot: no BEGIN and ROLLBACK round trips around them.
            self._read_engine = self._async_engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[DbConnection]:
        """A connection for reads: each statement sees one consistent snapshot."""
        if self._async_engine is None:
            with self.sync_engine.connect() as connection:
                yield _InlineConnection(connection)
        else:
            async with self._read_engine.connect() as connection:
                yield connection

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[DbConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if self._async_engine is None:
            async with self._write_lock:
                with self.sync_engine.connect() as connection:
                    connection.execution_options(sqlite_begin="IMMEDIATE")
                    with connection.begin():
                        yield _InlineConnection(connection)
        else:
            async with self._async_engine.begin() as connection:
                yield connection

    async def create_schema(self) -> None:
        """Create every table that does not exist yet."""
        if self._async_engine is None:
            Base.metadata.create_all(self.sync_engine)
        else:
            async with self._async_engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        if self._async_engine is None:
            self.sync_engine.dispose()
        else:
            await self._async_engine.dispose()
