"""Real servers for tests, each on a free loopback port, always stopped when the block ends.

- ``app_in_thread``: uvicorn serving an app object in a background thread of this process.
- ``running_servers``: uvicorn processes running ``handlers.app:app_from_environment``,
  configured only through ``SUPPORT_*`` variables as in production (rate limits off).
- ``supportctl_server``: a ``supportctl serve`` process, as an operator starts it.
- ``webhook_listener``: a ``supportctl webhooks listen`` process, as QA starts it.

Every process runs in its own process group and is stopped by its id: SIGTERM, then
SIGKILL after 10 s. A server that cannot bind its port (another test took it between
the probe and the bind) is started again on a new one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn

from support_requests.storage import schema
from support_requests.storage.database import sync_url
from support_requests.storage.models import Base
from tests.helpers import SECRET

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 4
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUPPORTCTL = str(Path(sys.executable).with_name("supportctl"))


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/openapi.json", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _answers_http(url: str) -> bool:
    """Whether anything answers HTTP at ``url`` (whatever the status)."""
    try:
        httpx.get(url, timeout=1.0)
    except httpx.TransportError:
        return False
    return True


def _wait_until_ready(
    url: str, alive: Callable[[], bool], answers: Callable[[str], bool] = _answers
) -> bool:
    """True once the server at ``url`` answers; False if it ended first (e.g. port taken)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not alive():
            return False
        if answers(url):
            return True
        time.sleep(0.05)
    raise RuntimeError(f"the server at {url} did not answer within {START_TIMEOUT:.0f} s")


# -- in this process -----------------------------------------------------------------


def _started(server: uvicorn.Server, thread: threading.Thread) -> bool:
    """True once ``server`` listens; False if its thread ended first (e.g. port taken)."""
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive():
            return False
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test server did not start within {START_TIMEOUT:.0f} s")
        time.sleep(0.02)
    return True


@contextmanager
def app_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` in a background thread until the block ends; yields its base URL."""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        if _started(server, thread):
            break
    else:
        raise RuntimeError(f"the test server did not start ({PORT_ATTEMPTS} ports tried)")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT)


# -- processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A running server process: its URL, the environment it runs in, and its log
    (stdout and stderr, or stdout alone when stderr has a file of its own)."""

    url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path | None = None

    def log(self) -> str:
        """Everything the server wrote so far (stdout and stderr, unless kept apart)."""
        return self.log_path.read_text(errors="replace")

    def errors(self) -> str:
        """What it wrote on stderr, when that is kept apart ("" otherwise)."""
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def running(self) -> bool:
        return self.process.poll() is None


def clean_environment(**overrides: str) -> dict[str, str]:
    """This environment minus ``SUPPORT_*``, colour and time zone variables, plus ``overrides``."""
    dropped = ("SUPPORT_", "NO_COLOR", "FORCE_COLOR", "TZ")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="120", **overrides)
    return env


def server_environment(database_url: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    """A clean environment plus the server's configuration (rate limits off)."""
    env = clean_environment(
        SUPPORT_DATABASE_URL=database_url,
        SUPPORT_JWT_SECRET=SECRET,
        SUPPORT_DATA_DIR=str(data_dir),
        SUPPORT_RATE_LIMIT_READS="off",
        SUPPORT_RATE_LIMIT_WRITES="off",
    )
    env.update(overrides)  # may replace the defaults above (e.g. turn rate limits on)
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


def migrated_database(url: str) -> None:
    """The service's tables, empty, at the newest Alembic revision (as ``db upgrade`` leaves
    them), so that server processes start on a ready schema instead of racing to create it."""
    empty_database(url)
    schema.upgrade(url)


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the process group this module started, by its id."""
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


@dataclass(frozen=True)
class _Launch:
    """How to start one server process: its command line for a port, environment and log."""

    command: Callable[[int], list[str]]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    stderr_path: Path | None = None
    answers: Callable[[str], bool] = _answers

    def spawn(self, stack: ExitStack) -> Server:
        """Start it on a free port; ``stack`` stops it when it closes."""
        port = free_port()
        with ExitStack() as files:
            log = files.enter_context(self.log_path.open("ab"))
            errors = files.enter_context(self.stderr_path.open("ab")) if self.stderr_path else None
            process = subprocess.Popen(
                self.command(port),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=errors or subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(stop, process)
        url = f"http://127.0.0.1:{port}"
        return Server(url, self.env, self.log_path, process, self.stderr_path)

    def ready(self, server: Server, stack: ExitStack) -> Server:
        """``server`` once it answers, or a new one if its port was taken meanwhile."""
        for _ in range(PORT_ATTEMPTS):
            if _wait_until_ready(server.url, server.running, self.answers):
                return server
            if "address already in use" not in server.log() + server.errors():
                raise RuntimeError(
                    f"the server exited with {server.process.returncode}:\n{server.log()}"
                )
            server = self.spawn(stack)
        raise RuntimeError(f"no free port for the server:\n{server.log()}")


@contextmanager
def running_servers(
    database_url: str, data_dir: Path, *, count: int = 1, workers: int = 1, **env_overrides: str
) -> Iterator[list[Server]]:
    """``count`` uvicorn processes (of ``workers`` each) on one database, started together."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = server_environment(database_url, data_dir, **env_overrides)

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "support_requests.handlers.app:app_from_environment",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]

    with ExitStack() as stack:
        launches = [
            _Launch(command, env, PROJECT_ROOT, data_dir / f"server-{index}.log")
            for index in range(count)
        ]
        started = [launch.spawn(stack) for launch in launches]
        yield [
            launch.ready(server, stack) for launch, server in zip(launches, started, strict=True)
        ]


@contextmanager
def supportctl_server(
    env: Mapping[str, str], workdir: Path, *extra_args: str, supportctl: str | Path = SUPPORTCTL
) -> Iterator[Server]:
    """``supportctl serve`` (this environment's, or the ``supportctl`` given) with ``env``,
    run in ``workdir``, until the block ends."""

    def command(port: int) -> list[str]:
        return [str(supportctl), "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args]

    with ExitStack() as stack:
        launch = _Launch(command, dict(env), workdir, workdir / "server.log")
        yield launch.ready(launch.spawn(stack), stack)


@contextmanager
def webhook_listener(env: Mapping[str, str], workdir: Path, *extra_args: str) -> Iterator[Server]:
    """``supportctl webhooks listen`` with ``env`` in ``workdir`` until the block ends: what it
    prints in ``log()``, its stderr (the banner; refusals with ``--json``) in ``errors()``."""

    def command(port: int) -> list[str]:
        return [SUPPORTCTL, "webhooks", "listen", "--port", str(port), *extra_args]

    with ExitStack() as stack:
        launch = _Launch(
            command,
            dict(env),
            workdir,
            workdir / "listen.out",
            stderr_path=workdir / "listen.err",
            answers=_answers_http,
        )
        yield launch.ready(launch.spawn(stack), stack)


@contextmanager
def worker_processes(
    env: Mapping[str, str], log_dir: Path, args_per_worker: Sequence[Sequence[str]]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One ``supportctl worker`` per entry of ``args_per_worker`` (its own arguments), with
    ``env``, until the block ends (SIGTERM, as a service manager stops them); each logs to
    ``log_dir/worker-N.log`` and is started once it says so."""
    with ExitStack() as stack:
        processes = []
        for index, args in enumerate(args_per_worker):
            with (log_dir / f"worker-{index}.log").open("ab") as log:
                process = subprocess.Popen(
                    [SUPPORTCTL, "worker", *args],
                    cwd=PROJECT_ROOT,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            stack.callback(stop, process)
            processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT
        while not all(
            "webhook worker started" in (log_dir / f"worker-{i}.log").read_text()
            for i in range(len(processes))
        ):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                logs = [(log_dir / f"worker-{i}.log").read_text() for i in range(len(processes))]
                raise RuntimeError(f"the workers did not start: {logs}")
            time.sleep(0.05)
        yield processes
