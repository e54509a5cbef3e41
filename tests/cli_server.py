"""A real ``supportctl serve`` process on a free port, and a clean environment for the CLI.

The server runs in its own process group and is always stopped (SIGTERM, then
SIGKILL after 10 s) when the block ends, so no process outlives a test module.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from support_requests.storage.database import sync_url
from support_requests.storage.models import Base

SUPPORTCTL = str(Path(sys.executable).with_name("supportctl"))
START_TIMEOUT = 30.0
BORDERS = re.compile(r"[│╭╮╰╯─]+")


def flat(text: str) -> str:
    """Output as one line: panel borders dropped, whitespace runs made one space."""
    return " ".join(BORDERS.sub(" ", text).split())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment(**overrides: str) -> dict[str, str]:
    """This environment minus ``SUPPORT_*``, colour and time zone variables, plus ``overrides``."""
    dropped = ("SUPPORT_", "NO_COLOR", "FORCE_COLOR", "TZ")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="120", **overrides)
    return env


def empty_database(url: str) -> None:
    """Drop every table of the service (Alembic's too), so ``db init`` starts from nothing."""
    engine = sa.create_engine(sync_url(url))
    try:
        Base.metadata.drop_all(engine)
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Server:
    """A running server: its URL, the environment it runs in, and its log."""

    url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the process group this module started, by its id."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def serving(env: Mapping[str, str], workdir: Path, *extra_args: str) -> Iterator[Server]:
    """``supportctl serve`` with ``env`` until the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [SUPPORTCTL, "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args],
            env=dict(env),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(url, dict(env), log_path, process)
    try:
        _wait_until_up(server)
        yield server
    finally:
        stop(process)


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"supportctl serve exited early:\n{server.log()}")
        try:
            httpx.get(f"{server.url}/openapi.json", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"supportctl serve did not answer within {START_TIMEOUT} s:\n{server.log()}")
