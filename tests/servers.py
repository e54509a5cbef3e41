"""Real server processes for tests: uvicorn running ``handlers.app:app_from_environment``.

Each server is a subprocess in its own process group, on a free loopback port,
configured only through ``SUPPORT_*`` variables as in production (rate limits
off). ``running_servers`` starts them together, waits until each answers, and
always stops them when the block ends: SIGTERM, then SIGKILL after 10 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from support_requests.storage import schema
from support_requests.storage.database import sync_url
from support_requests.storage.models import Base
from tests.helpers import SECRET

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 4
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Server:
    """One running server process and where its output goes."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def migrated_database(url: str) -> None:
    """The service's tables, empty, at the newest Alembic revision (as ``db upgrade`` leaves
    them), so that server processes start on a ready schema instead of racing to create it."""
    engine = sa.create_engine(sync_url(url))
    try:
        Base.metadata.drop_all(engine)
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()
    schema.upgrade(url)


def server_environment(database_url: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    """This process's environment without ``SUPPORT_*``, plus the server's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORT_")}
    env.update(
        SUPPORT_DATABASE_URL=database_url,
        SUPPORT_JWT_SECRET=SECRET,
        SUPPORT_DATA_DIR=str(data_dir),
        SUPPORT_RATE_LIMIT_READS="off",
        SUPPORT_RATE_LIMIT_WRITES="off",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)  # may replace the defaults above (e.g. turn rate limits on)
    return env


def _spawn(env: Mapping[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "support_requests.handlers.app:app_from_environment",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/openapi.json", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _wait_until_ready(process: subprocess.Popen[bytes], base_url: str) -> bool:
    """True once the server answers; False if it exited first (e.g. the port was taken)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _answers(base_url):
            return True
        time.sleep(0.05)
    raise RuntimeError(f"the server at {base_url} did not answer within {START_TIMEOUT:.0f} s")


@contextmanager
def running_servers(
    database_url: str, data_dir: Path, *, count: int = 1, **env_overrides: str
) -> Iterator[list[Server]]:
    """``count`` server processes on one database, started together, stopped at the end."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = server_environment(database_url, data_dir, **env_overrides)
    with ExitStack() as stack:
        pending = []
        for index in range(count):
            log_path = data_dir / f"server-{index}.log"
            process, base_url = _spawn(env, log_path)
            stack.callback(_stop, process)
            pending.append((process, base_url, log_path))
        servers = []
        for process, base_url, log_path in pending:
            for _ in range(PORT_ATTEMPTS):
                if _wait_until_ready(process, base_url):
                    break
                if "address already in use" not in log_path.read_text(errors="replace"):
                    raise RuntimeError(
                        f"the server exited with {process.returncode}:\n"
                        + log_path.read_text(errors="replace")
                    )
                process, base_url = _spawn(env, log_path)
                stack.callback(_stop, process)
            else:
                raise RuntimeError("no free port for the server:\n" + log_path.read_text())
            servers.append(Server(base_url, process, log_path))
        yield servers
