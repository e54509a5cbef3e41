"""Connections, transactions, and statements run by the driver.

Storage code writes SQLAlchemy Core statements and builds each one once;
``support_requests.framework.sqlalchemy_compiled`` compiles it once per dialect and the
driver runs the SQL with SQLAlchemy's bind and result processors applied.
SQLAlchemy's ``Connection`` costs 100-300 µs per statement in checkout, execution
context and result machinery, more than a query on a local database; this path costs
tens. Driver errors come out as SQLAlchemy's exceptions
(``OperationalError``, ``IntegrityError``), so a database that cannot answer is a 503
and a duplicate key is still an ``IntegrityError``.

SQLite: the blocking sqlite3 driver called inline on the event loop (a query on a
local file takes tens of microseconds, far less than a hop to a driver thread). One
connection reads outside any transaction (WAL: one statement sees one snapshot,
beside the writer); one writes, ``BEGIN IMMEDIATE`` behind an asyncio lock, so this
process's writers queue without busy-wait sleeping and never fail on a lock upgrade;
the busy timeout only arbitrates between processes. SQLite checkpoints the WAL itself
in the commit that crosses its threshold: a checkpoint in the background, beside
continuous writes, never finds the WAL fully copied at the next write, so the WAL
never restarts and grows without bound (measured: 520 MB after 20,000 replies).

PostgreSQL: psycopg 3 async connections in a fixed pool of this process (opening a
connection costs milliseconds). No ping per checkout: a connection found broken is
dropped with every idle one (they share its fate when the server restarted), and the
request that found it gets a 503. Reads run in autocommit (each statement its own
snapshot, no BEGIN/ROLLBACK round trips); psycopg prepares a statement on a
connection once it has run a few times there. (psycopg's pipeline mode would save
round trips in writes, but it polls a writable socket while it waits: a third of a
write's CPU, measured; a round trip on a local server is cheaper than that.)
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import Engine, Executable, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, OperationalError
from sqlalchemy.pool import NullPool

from support_requests import metrics
from support_requests.framework.sqlalchemy_compiled import Statements, rows
from support_requests.storage.models import Base

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Every statement the driver runs, as (SQL, driver parameters): tests watch here.
STATEMENT_OBSERVERS: list[Callable[[str, Any], None]] = []


def sync_url(url: str) -> URL:
    """The driver URL for a SQLite or PostgreSQL URL as operators write it."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")


def libpq_url(url: str) -> str:
    """A PostgreSQL URL as libpq (``psycopg.connect``) takes it, password included: for a
    connection of its own outside the pool (a worker's ``LISTEN``)."""
    return sync_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Result:
    """A statement's rows, all fetched, and the count of rows it changed."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        """Every row."""
        return self._rows

    def first(self) -> Any:
        """The first row, or None."""
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        """The first column of the only row."""
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when one was required")
        return self._rows[0][0]


def _observe(sql: str, parameters: Any) -> None:
    for observer in STATEMENT_OBSERVERS:
        observer(sql, parameters)


class DbConnection(Protocol):
    """What storage code needs of a connection, on either database."""

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> Result:
        """Run a statement (once per parameter set when given a list)."""

    async def scalar(self, statement: Executable, parameters: dict[str, Any] | None = None) -> Any:
        """The first column of the first row, or None."""

    def begin_nested(self) -> Any:
        """A savepoint, as an async context manager."""


class _Connection:
    """What both drivers' connections share: ``scalar`` and savepoints by statement."""

    _savepoints = 0

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> Result:
        raise NotImplementedError

    async def _control(self, sql: str) -> None:
        raise NotImplementedError

    async def scalar(self, statement: Executable, parameters: dict[str, Any] | None = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"sp_{self._savepoints}"
        await self._control(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self._control(f"ROLLBACK TO SAVEPOINT {name}")
            await self._control(f"RELEASE SAVEPOINT {name}")
            raise
        await self._control(f"RELEASE SAVEPOINT {name}")


class _SqliteConnection(_Connection):
    """A sqlite3 connection behind the ``DbConnection`` interface."""

    def __init__(self, connection: sqlite3.Connection, statements: Statements) -> None:
        self._connection = connection
        self._statements = statements

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> Result:
        prepared, values = self._statements.prepare(statement, parameters)
        sql = prepared.sql
        try:
            if STATEMENT_OBSERVERS:
                _observe(sql, values[0] if len(values) == 1 else values)
            if len(values) == 1:
                cursor = self._connection.execute(sql, values[0])
            else:
                cursor = self._connection.executemany(sql, values)
            fetched = cursor.fetchall() if cursor.description else []
        except sqlite3.Error as error:
            raise DBAPIError.instance(sql, values, error, sqlite3.Error) from error
        return Result(rows(prepared, cursor.description, fetched), cursor.rowcount)

    async def _control(self, sql: str) -> None:
        _control_sqlite(self._connection, sql)


def _control_sqlite(connection: sqlite3.Connection, sql: str) -> None:
    if STATEMENT_OBSERVERS:
        _observe(sql, ())
    try:
        connection.execute(sql)
    except sqlite3.Error as error:
        raise DBAPIError.instance(sql, (), error, sqlite3.Error) from error


class _Sqlite:
    """The reading and the writing connection of one SQLite database file."""

    def __init__(self, url: URL, busy_timeout_ms: int, statements: Statements) -> None:
        self._path = url.database or ":memory:"
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        self._statements = statements
        self._lock = asyncio.Lock()
        self._reader: _SqliteConnection | None = None
        self._writer: _SqliteConnection | None = None

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: the driver never begins a transaction on its own.
        # check_same_thread=False: every use is on the event loop, one statement at a time.
        connection = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=0
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    def _connection(self, writer: bool) -> _SqliteConnection:
        if self._path == ":memory:":  # one database per connection: share one
            writer = True
        current = self._writer if writer else self._reader
        if current is None:
            try:
                current = _SqliteConnection(self._open(), self._statements)
            except sqlite3.Error as error:
                raise DBAPIError.instance("connect", (), error, sqlite3.Error) from error
            if writer:
                self._writer = current
            else:
                self._reader = current
        return current

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[DbConnection]:
        yield self._connection(writer=False)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[DbConnection]:
        async with self._lock:
            connection = self._connection(writer=True)
            raw = connection._connection
            _control_sqlite(raw, "BEGIN IMMEDIATE")
            try:
                yield connection
                _control_sqlite(raw, "COMMIT")
            except BaseException:
                if raw.in_transaction:
                    _control_sqlite(raw, "ROLLBACK")
                raise

    async def close(self) -> None:
        for connection in (self._reader, self._writer):
            if connection is not None:
                connection._connection.close()
        self._reader = self._writer = None
        self._lock = asyncio.Lock()  # as the pool's semaphore: one per event loop


class _PgConnection(_Connection):
    """A psycopg async connection behind the ``DbConnection`` interface."""

    def __init__(self, connection: Any, pool: _PgPool) -> None:
        self._connection = connection
        self._pool = pool
        self.in_transaction = False

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> Result:
        prepared, values = self._pool.statements.prepare(statement, parameters)
        sql = prepared.sql
        if STATEMENT_OBSERVERS:
            _observe(sql, values[0] if len(values) == 1 else values)
        try:
            return await self._run(prepared, values)
        except self._pool.driver_error as error:
            failure = self._pool.failed(self._connection, sql, values, error)
            # A read outside a transaction that met a dead connection (the server restarted,
            # or ended the backend) runs again, once, on a fresh one: it changed nothing.
            if not (
                failure.connection_invalidated
                and not self.in_transaction
                and getattr(statement, "is_select", False)
            ):
                raise failure from error
        await self._reconnect()
        try:
            return await self._run(prepared, values)
        except self._pool.driver_error as error:
            raise self._pool.failed(self._connection, sql, values, error) from error

    async def _run(self, prepared: Any, values: list[Any]) -> Result:
        cursor = self._connection.cursor()
        if len(values) == 1:
            await cursor.execute(prepared.sql, values[0], binary=prepared.binary)
        else:
            await cursor.executemany(prepared.sql, values)
        # psycopg builds ``description`` anew on each access: ask the result instead.
        result = cursor.pgresult
        returned = result is not None and result.status == self._pool.rows_returned
        fetched = await cursor.fetchall() if returned else []
        description = cursor.description if fetched and prepared.row is None else None
        return Result(rows(prepared, description, fetched), cursor.rowcount)

    async def _reconnect(self) -> None:
        """Replace a dead connection with a fresh one (the pool checks in this one)."""
        _close_later(self._connection)
        self._connection = await self._pool.connect()

    async def begin(self) -> None:
        """BEGIN; on a connection found dead, BEGIN again on a fresh one (nothing was done
        on the dead one, so a write after a server restart is not refused)."""
        try:
            await self._control("BEGIN")
        except DBAPIError as failure:
            if not failure.connection_invalidated:
                raise
            await self._reconnect()
            await self._control("BEGIN")
        self.in_transaction = True

    async def roll_back(self) -> None:
        """End a failed transaction; a connection that cannot is closed at check-in."""
        if self._connection.broken or self._connection.closed:
            return
        with suppress(DBAPIError):
            await self._control("ROLLBACK")

    async def _control(self, sql: str) -> None:
        if STATEMENT_OBSERVERS:
            _observe(sql, None)
        try:
            await self._connection.execute(sql)
        except self._pool.driver_error as error:
            raise self._pool.failed(self._connection, sql, None, error) from error


class _PgPool:
    """At most ``size`` open psycopg connections; a request beyond them waits for one."""

    def __init__(
        self,
        url: URL,
        size: int,
        statements: Statements,
        timeout: float,
        session: Mapping[str, str],
    ) -> None:
        import psycopg

        self.statements = statements
        self.driver_error = psycopg.Error
        self._connect = psycopg.AsyncConnection.connect
        self._idle_status = psycopg.pq.TransactionStatus.IDLE
        self.rows_returned = psycopg.pq.ExecStatus.TUPLES_OK
        arguments, options = statements.dialect.create_connect_args(url)
        self._arguments = arguments
        self._options = {"connect_timeout": 5, **options, "autocommit": True}
        if session:
            # libpq's ``options``: settings the server applies as the session starts,
            # after any the URL gives.
            given = [options["options"]] if options.get("options") else []
            settings = [f"-c {name}={value}" for name, value in session.items()]
            self._options["options"] = " ".join(given + settings)
        self._size = size
        self._slots = asyncio.Semaphore(size)
        self._timeout = timeout
        self._idle: list[Any] = []

    def failed(self, connection: Any, sql: str, values: Any, error: Exception) -> DBAPIError:
        """The SQLAlchemy exception for ``error``; a broken connection takes the idle ones along."""
        broken = connection is None or connection.broken or connection.closed
        if broken:
            self._drop_idle()
        # A driver error (a ``driver_error`` subclass) always comes out as a DBAPIError.
        return cast(
            DBAPIError,
            DBAPIError.instance(
                sql,
                values,
                error,
                self.driver_error,
                connection_invalidated=broken,
                dialect=self.statements.dialect,
            ),
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_PgConnection]:
        if self._slots.locked():
            metrics.db_connection_waits_total.inc()
        try:
            # asyncio.timeout, not wait_for: no task per waiting request.
            async with asyncio.timeout(self._timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise OperationalError(
                "pool checkout", None, TimeoutError("no free database connection")
            ) from None
        checked_out: _PgConnection | None = None
        try:
            metrics.db_connections_in_use.inc()
            if self._idle:
                connection = self._idle.pop()
                metrics.db_connections_idle.dec()
            else:
                connection = await self.connect()
            checked_out = _PgConnection(connection, self)
            yield checked_out
        finally:
            metrics.db_connections_in_use.dec()
            if checked_out is not None:
                # The one it holds now: a dead one may have been replaced meanwhile.
                self._check_in(checked_out._connection)
            self._slots.release()

    async def connect(self) -> Any:
        """A new psycopg connection (a driver error comes out as SQLAlchemy's)."""
        try:
            return await self._connect(*self._arguments, **self._options)
        except self.driver_error as error:
            raise self.failed(None, "connect", None, error) from error

    def _check_in(self, connection: Any) -> None:
        usable = (
            not connection.broken
            and not connection.closed
            and connection.info.transaction_status == self._idle_status
        )
        if usable:
            self._idle.append(connection)
            metrics.db_connections_idle.inc()
        else:
            _close_later(connection)

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        metrics.db_connections_idle.dec(len(idle))
        for connection in idle:
            _close_later(connection)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        metrics.db_connections_idle.dec(len(idle))
        for connection in idle:
            await connection.close()
        # A semaphore belongs to the event loop that first waited on it; the next loop
        # (an app served again, a test) gets its own.
        self._slots = asyncio.Semaphore(self._size)


_closing: set[asyncio.Task[Any]] = set()


def _close_later(connection: Any) -> None:
    """Close a psycopg connection without making the caller wait for it."""
    try:
        task = asyncio.get_running_loop().create_task(connection.close())
    except RuntimeError:  # no loop any more: the process is ending
        return
    _closing.add(task)
    task.add_done_callback(_closing.discard)


Scope = Callable[[], AbstractAsyncContextManager[DbConnection]]


def _traced(tracer: Tracer, name: str, scope: Scope, system: str) -> Scope:
    """``scope`` inside a span named ``name`` (a child of the request's)."""

    @asynccontextmanager
    async def traced() -> AsyncIterator[DbConnection]:
        with tracer.start_as_current_span(name, attributes={"db.system": system}):
            async with scope() as connection:
                yield connection

    return traced


class Database:
    """One database: its connections, and the read and write scopes storage code uses.

    ``reading()``: a connection outside any transaction (each statement its own);
    ``writing()``: a write transaction; ``autocommit()``: one-statement writes. With a
    ``tracer``, each scope is a span. ``session``: PostgreSQL settings every connection
    starts with (SQLite has none), for a process whose statements all want them (the
    webhook worker's, ``deliveries.WORKER_SESSION``).
    """

    reading: Scope
    writing: Scope
    autocommit: Scope

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        pool_timeout: float = 10,
        tracer: Tracer | None = None,
        session: Mapping[str, str] | None = None,
    ) -> None:
        target = sync_url(url)
        self.is_sqlite = target.get_backend_name() == "sqlite"
        # For the dialect, the schema and operators' tools; requests use the driver below.
        self.sync_engine: Engine = create_engine(target, poolclass=NullPool)
        self._statements = Statements(self.sync_engine.dialect)
        self._dialect_ready = False
        self._sqlite: _Sqlite | None = None
        self._pg: _PgPool | None = None
        if self.is_sqlite:
            self._sqlite = _Sqlite(target, sqlite_busy_timeout_ms, self._statements)
        else:
            self._pg = _PgPool(target, pool_size, self._statements, pool_timeout, session or {})
        # Traced scopes only when tracing is on: off, the scopes are the plain methods.
        self.reading = self._reading
        self.writing = self._writing
        self.autocommit = self._autocommit
        if tracer is not None:
            system = target.get_backend_name()
            self.reading = _traced(tracer, "db.read", self._reading, system)
            self.writing = _traced(tracer, "db.write", self._writing, system)
            self.autocommit = _traced(tracer, "db.write", self._autocommit, system)

    def _ready(self) -> None:
        # The dialect learns the server's capabilities (RETURNING, versions) on its first
        # connection; statements compiled before that would not know them.
        if not self._dialect_ready:
            with self.sync_engine.connect():
                pass
            self._dialect_ready = True

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[DbConnection]:
        """A connection outside any transaction: each statement runs (and reads one snapshot,
        and commits) on its own."""
        if not self._dialect_ready:
            await self._prepare_dialect()
        if self._sqlite is not None:
            async with self._sqlite.reading() as connection:
                yield connection
        else:
            assert self._pg is not None
            async with self._pg.connection() as connection:
                yield connection

    @asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[DbConnection]:
        """For writes that are one statement each: no BEGIN and COMMIT round trips around
        them on PostgreSQL (a statement is atomic by itself); on SQLite, a write transaction."""
        if self._sqlite is not None:
            async with self._writing() as connection:
                yield connection
        else:
            async with self._reading() as connection:
                yield connection

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[DbConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if not self._dialect_ready:
            await self._prepare_dialect()
        if self._sqlite is not None:
            async with self._sqlite.writing() as connection:
                yield connection
            return
        assert self._pg is not None
        async with self._pg.connection() as connection:
            await connection.begin()
            try:
                yield connection
                await connection._control("COMMIT")
            except BaseException:
                await connection.roll_back()
                raise

    async def _prepare_dialect(self) -> None:
        try:
            if self.is_sqlite:
                self._ready()
            else:
                await asyncio.to_thread(self._ready)
        except DBAPIError:
            raise
        except Exception as error:  # e.g. psycopg's own errors on connect
            raise OperationalError("connect", None, error) from error

    async def create_schema(self) -> None:
        """Create every table that does not exist yet."""
        await asyncio.to_thread(Base.metadata.create_all, self.sync_engine)

    async def dispose(self) -> None:
        """Close every connection."""
        if self._sqlite is not None:
            await self._sqlite.close()
        if self._pg is not None:
            await self._pg.close()
        self.sync_engine.dispose()
