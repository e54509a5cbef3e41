"""Database faults: 503 with Retry-After, no internals, and recovery without a restart."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from collections import Counter
from contextlib import suppress

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.storage.database import sync_url
from tests.conftest import PG_URL, reset_pg
from tests.helpers import MOBILE, SECRET, create, customer
from tests.servers import app_in_thread, free_port

pg_only = pytest.mark.skipif(not PG_URL, reason="needs SUPPORT_TEST_PG_URL")


class TcpProxy:
    """A loopback TCP relay to ``target_port`` that a test can stop and start again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one, as a database restart would."""
        if self._listener is not None:
            with suppress(OSError):
                # Wakes the thread blocked in accept(); close() alone leaves it listening.
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for connection in self._connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


def _assert_unavailable(response) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["code"] == "service_unavailable"
    for leak in ("Traceback", "psycopg", "sqlalchemy", "OperationalError", "SELECT", "5432"):
        assert leak not in response.text


@pg_only
@pytest.mark.postgres
def test_unreachable_postgresql_is_503_and_the_service_recovers(tmp_path):
    assert PG_URL is not None
    reset_pg(PG_URL)
    upstream = make_url(PG_URL)
    proxy = TcpProxy(upstream.port or 5432)
    proxy.start()
    via_proxy = upstream.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )
    alice = customer()
    app = create_app(Settings(database_url=via_proxy, jwt_secret=SECRET.encode(), pool_size=2))
    try:
        with app.test_client() as client:
            created = create(client, alice)
            proxy.stop()
            _assert_unavailable(client.get(f"{MOBILE}/{created['id']}", headers=alice))
            _assert_unavailable(
                client.post(
                    f"{MOBILE}/{created['id']}/messages", json={"body": "hi"}, headers=alice
                )
            )
            proxy.start()
            recovered = client.get(f"{MOBILE}/{created['id']}", headers=alice)
            assert recovered.status_code == 200
            assert recovered.json()["data"]["id"] == created["id"]
    finally:
        proxy.stop()


def test_a_locked_sqlite_database_is_503_and_nothing_is_written(tmp_path):
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    alice = customer()
    app = create_app(
        Settings(database_url=url, jwt_secret=SECRET.encode(), sqlite_busy_timeout_ms=200)
    )
    with app.test_client() as client:
        created = create(client, alice)
        blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            _assert_unavailable(
                client.post(
                    f"{MOBILE}/{created['id']}/messages", json={"body": "hi"}, headers=alice
                )
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        after = client.get(f"{MOBILE}/{created['id']}", headers=alice)
    assert after.status_code == 200
    assert len(after.json()["data"]["messages"]) == 1


def _terminate_backends(engine: sa.Engine) -> int:
    """End every other connection to the test database, as a server restart would."""
    with engine.connect() as connection:
        ended = connection.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    return int(ended)


@pg_only
@pytest.mark.postgres
@pytest.mark.slow
def test_reads_meeting_dead_pooled_connections_are_retried_not_503(tmp_path):
    """pg_terminate_backend on every pooled connection, again and again, under load: no read
    answers 5xx (each retries once on a fresh connection); a write answers 201, or 503 only
    when its transaction was cut (and then nothing of it is stored)."""
    assert PG_URL is not None
    reset_pg(PG_URL)
    alice = customer()
    app = create_app(Settings(database_url=PG_URL, jwt_secret=SECRET.encode(), pool_size=6))
    admin_engine = sa.create_engine(sync_url(PG_URL), poolclass=sa.NullPool)
    reads: list[int] = []
    writes: list[tuple[int, str]] = []
    terminated = 0

    async def load(url: str, request_ids: list[int]) -> None:
        nonlocal terminated
        stop = asyncio.Event()

        async def reader(client: httpx.AsyncClient, index: int) -> None:
            while not stop.is_set():
                path = f"{MOBILE}/{request_ids[index % len(request_ids)]}" if index % 2 else MOBILE
                reads.append((await client.get(path, headers=alice)).status_code)

        async def writer(client: httpx.AsyncClient, index: int) -> None:
            count = 0
            while not stop.is_set():
                body = f"reply {index}-{count}"
                count += 1
                answer = await client.post(
                    f"{MOBILE}/{request_ids[index]}/messages", json={"body": body}, headers=alice
                )
                writes.append((answer.status_code, body))

        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            tasks = [asyncio.create_task(reader(client, i)) for i in range(12)]
            tasks += [asyncio.create_task(writer(client, i)) for i in range(len(request_ids))]
            for _ in range(12):
                await asyncio.sleep(0.25)
                terminated += await asyncio.to_thread(_terminate_backends, admin_engine)
            stop.set()
            await asyncio.gather(*tasks)

    try:
        with app_in_thread(app) as url:
            with httpx.Client(base_url=url) as setup:
                request_ids = [create(setup, alice)["id"] for _ in range(3)]
            asyncio.run(load(url, request_ids))
        stored = _stored_bodies(admin_engine)
    finally:
        admin_engine.dispose()
    assert terminated >= 12, terminated
    assert len(reads) > 100
    assert Counter(reads) == Counter({200: len(reads)})
    assert {status for status, _ in writes} <= {201, 503}
    assert {body for status, body in writes if status == 201} <= stored
    assert not {body for status, body in writes if status == 503} & stored


def _stored_bodies(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT body FROM messages")).scalars())
