"""Exactly once across crashes: the server is SIGKILLed at random moments while 32 clients
send idempotent replies; every client retries its key until it gets an answer. Every answer
is 201, every key's answers are one answer, and every reply is in its thread exactly once.

Slow (server processes); on SQLite and, with SUPPORT_TEST_PG_URL, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from support_requests.storage.database import sync_url
from tests.helpers import MOBILE, customer
from tests.servers import (
    PROJECT_ROOT,
    SUPPORTCTL,
    free_port,
    migrated_database,
    server_environment,
)

pytestmark = pytest.mark.slow

CLIENTS = 32
REPLIES = 30
ROUNDS = 5


class KilledServer:
    """`supportctl serve` that the test kills with SIGKILL and starts again, on one port."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.env = server_environment(database_url, data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SUPPORTCTL, "serve", "--port", str(self.port), "--log-level", "warning"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            time.sleep(0.05)
        raise AssertionError(f"not ready:\n{self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)


RETRIED: Counter[str] = Counter()


async def _send_until_answered(
    client: httpx.AsyncClient, path: str, body: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    """A mobile app's retry: the same key until an answer arrives (the server may be down)."""
    while True:
        try:
            return await client.post(path, json=body, headers=headers)
        except httpx.TransportError:
            RETRIED[headers["Idempotency-Key"]] += 1
            await asyncio.sleep(0.05)


async def _clients(server: KilledServer, threads: list[tuple[dict[str, str], int]]) -> dict:
    answers: dict[str, list[httpx.Response]] = {}

    async def one(index: int, alice: dict[str, str], request_id: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for n in range(REPLIES):
                key = f"crash-{index}-{n}"
                headers = {**alice, "Idempotency-Key": key}
                body = {"body": f"reply {index}/{n}"}
                path = f"{MOBILE}/{request_id}/messages"
                answers.setdefault(key, []).append(
                    await _send_until_answered(client, path, body, headers)
                )

    await asyncio.gather(*(one(i, alice, rid) for i, (alice, rid) in enumerate(threads)))
    return answers


def _open_threads(url: str) -> list[tuple[dict[str, str], int]]:
    threads = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for index in range(CLIENTS):
            alice = customer()
            body = {"category": "technical", "subject": f"Crash {index}", "message": "Start."}
            created = client.post(MOBILE, json=body, headers=alice)
            assert created.status_code == 201, created.text
            threads.append((alice, created.json()["data"]["id"]))
    return threads


def test_sigkill_at_random_moments_never_writes_a_reply_twice_nor_answers_409(
    database_url: str, tmp_path: Path
) -> None:
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'crash.db'}"
    migrated_database(database_url)
    RETRIED.clear()
    server = KilledServer(database_url, tmp_path)
    rng = random.Random(20261206)
    server.start()
    try:
        threads = _open_threads(server.url)

        async def run() -> dict:
            load = asyncio.create_task(_clients(server, threads))
            for _ in range(ROUNDS):
                await asyncio.sleep(rng.uniform(0.1, 0.5))
                if load.done():
                    break
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
            return await load

        answers = asyncio.run(run())
        # Every key once more, after the dust settled: each replays its one answer.
        replays = asyncio.run(_retry_all(server.url, threads))
    finally:
        server.stop()
    assert server.kills >= 3, server.kills
    statuses = Counter(a.status_code for responses in answers.values() for a in responses)
    assert statuses == Counter({201: CLIENTS * REPLIES}), statuses
    for key, response in replays.items():
        assert response.status_code == 201, (key, response.text)
        assert response.headers["Idempotent-Replayed"] == "true"
        assert response.content == answers[key][-1].content
    engine = sa.create_engine(sync_url(database_url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            bodies = Counter(
                connection.execute(
                    sa.text("SELECT body FROM messages WHERE body LIKE 'reply %'")
                ).scalars()
            )
    finally:
        engine.dispose()
    expected = {f"reply {i}/{n}" for i in range(CLIENTS) for n in range(REPLIES)}
    assert set(bodies) == expected
    assert [body for body, times in bodies.items() if times != 1] == []
    print(
        f"\n{server.kills} kills, {CLIENTS * REPLIES} replies, {len(RETRIED)} of them retried "
        f"after a lost answer ({sum(RETRIED.values())} retries), each stored once"
    )


async def _retry_all(url: str, threads: list[tuple[dict[str, str], int]]) -> dict:
    replays: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for index, (alice, request_id) in enumerate(threads):
            for n in range(REPLIES):
                key = f"crash-{index}-{n}"
                replays[key] = await client.post(
                    f"{MOBILE}/{request_id}/messages",
                    json={"body": f"reply {index}/{n}"},
                    headers={**alice, "Idempotency-Key": key},
                )
    return replays
