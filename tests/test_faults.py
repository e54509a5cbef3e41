"""Database faults: 503 with Retry-After, no internals, and recovery without a restart."""

from __future__ import annotations

import socket
import sqlite3
import threading
from contextlib import suppress

import pytest
from sqlalchemy.engine import make_url

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from tests.conftest import PG_URL, reset_pg
from tests.helpers import MOBILE, SECRET, create, customer
from tests.servers import free_port

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
