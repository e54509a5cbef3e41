#!/usr/bin/env python3
"""Benchmark webhook delivery on PostgreSQL: how fast workers deliver, how late, and what a
draining worker costs the API.

    python bench/webhooks.py --pg postgresql://postgres@127.0.0.1:5432/postgres

On a fresh database ``bench_<random>`` next to ``--pg`` (dropped afterwards), with one
webhook endpoint pointing at a local receiver (uvicorn in a process of its own, verifying
every signature with ``standardwebhooks``), it measures:

1. ``delivery``: events delivered per second by 1 and by 3 ``supportctl worker`` processes,
   from a backlog of ``--events`` events spread over ``--requests`` requests (enqueued
   through the outbox before the workers start; the rate is counted between the first and
   the last arrival).
2. ``lag``: one worker, events enqueued one per transaction at ``--rate`` per second for
   ``--lag-seconds``; the lag of each is its arrival at the receiver minus its timestamp
   (taken in the enqueuing transaction): p50, p99, max.
3. ``api``: ``supportctl serve``'s create and reply throughput under wrk (as
   ``bench/run.py`` measures them), alternately without a worker and with one draining
   (``--api-pairs`` runs with one, each against the mean of the runs either side of it;
   the cost is their mean, ``cost_percent_each`` each one's), and the CPU of the
   PostgreSQL processes per API request in each run. The API writes events only
   once the outbox is wired into its write path; until then ``events written`` reads 0
   and the worker has nothing to drain.

4. ``notify`` (not in the default ``--parts``): what a listening worker costs each writing
   transaction. One event per transaction, as fast as one connection goes, for
   ``--notify-seconds``, alternately with no one listening and with a connection that
   ``LISTEN``s on the deliveries' channel (``--notify-pairs`` runs with it); the CPU of the
   PostgreSQL processes per transaction in each run, and the ratio with/without.

With ``--observability on``, metrics and tracing are on as a deployment runs them: every
``supportctl serve`` and ``supportctl worker`` exports its spans over OTLP/HTTP to a local
trace sink (``TraceSink``, counting what it receives), and the server's ``/metrics``
(``SUPPORT_METRICS_TOKEN``) and each worker's (``--metrics-port``) are scraped once a second;
``delivery`` and ``lag`` then get a ``supportctl serve`` too, idle but scraped. With
``both``, each part is measured off, then on, and the report adds ``on`` (that run) and
``on_off`` (each figure off and on, and their ratio).

Prints the numbers as JSON and writes them (``--out``). Needs wrk for ``api`` (see
bench/README.md); run it with the project's Python environment.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench

# ``--pin``: the command prefix that runs the workers and the receiver on a CPU of their own
# (as on another host), while this script, the server and wrk keep the other.
OTHER_CPU: list[str] = []
SECRET_KEY = "bench-webhooks-key-" + "k" * 32
JWT_SECRET = "bench-webhooks-jwt-" + "s" * 32
METRICS_TOKEN = "bench-webhooks-metrics-" + "m" * 16
PARTS = ("delivery", "lag", "api", "notify")


# -- the helpers (``python bench/webhooks.py receiver|trace-sink``) -----------------------


class _App:
    """An ASGI app that answers each request once it has its whole body: ``GET`` with
    ``stats()`` as JSON, anything else with ``answer()``."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            status, content_type, payload = 200, "application/json", json.dumps(self.stats())
        else:
            status, content_type, payload = self.answer(scope, body)
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload.encode()})

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def answer(self, scope: dict[str, Any], body: bytes) -> tuple[int, str, str]:
        raise NotImplementedError


class Receiver(_App):
    """Verifies and counts deliveries; ``GET /stats`` reports, ``POST /reset`` starts
    over."""

    def __init__(self, secret: str) -> None:
        from standardwebhooks import Webhook

        self.webhook = Webhook(secret)
        self.reset()

    def reset(self) -> None:
        self.ids: set[str] = set()
        self.arrivals = 0
        self.failed = 0
        self.first: float | None = None
        self.last: float | None = None
        self.lags_ms: list[float] = []

    def answer(self, scope: dict[str, Any], body: bytes) -> tuple[int, str, str]:
        if scope["path"] == "/reset":
            self.reset()
        else:
            self.record(scope, body)
        return 200, "application/json", json.dumps({"ok": True})

    def record(self, scope: dict[str, Any], body: bytes) -> None:
        now = time.time()
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            event = self.webhook.verify(body, headers)
        except Exception:
            self.failed += 1
            return
        self.arrivals += 1
        self.ids.add(headers["webhook-id"])
        self.first = now if self.first is None else self.first
        self.last = now
        sent = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        self.lags_ms.append((now - sent.timestamp()) * 1000)

    def stats(self) -> dict[str, Any]:
        return {
            "arrivals": self.arrivals,
            "unique": len(self.ids),
            "unverified": self.failed,
            "first": self.first,
            "last": self.last,
            "lags_ms": self.lags_ms,
        }


class TraceSink(_App):
    """Stands in for an OpenTelemetry collector: ``POST /v1/traces`` (OTLP/HTTP, protobuf)
    is answered 200 with an empty ``ExportTraceServiceResponse``, and the exports, their
    bytes and their spans (by name) are counted; ``GET /stats`` reports."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.parse = ExportTraceServiceRequest.FromString
        self.exports = 0
        self.bytes = 0
        self.rejected = 0
        self.spans: Counter[str] = Counter()

    def answer(self, scope: dict[str, Any], body: bytes) -> tuple[int, str, str]:
        from google.protobuf.message import DecodeError

        if scope["path"] != "/v1/traces":
            return 404, "text/plain", "POST /v1/traces only"
        received = len(body)
        if (b"content-encoding", b"gzip") in scope["headers"]:
            body = gzip.decompress(body)
        try:
            export = self.parse(body)
        except DecodeError:
            self.rejected += 1
            return 400, "text/plain", "not an ExportTraceServiceRequest"
        self.exports += 1
        self.bytes += received
        for resource in export.resource_spans:
            for scoped in resource.scope_spans:
                self.spans.update(span.name for span in scoped.spans)
        return 200, "application/x-protobuf", ""

    def stats(self) -> dict[str, Any]:
        return {
            "exports": self.exports,
            "bytes": self.bytes,
            "spans": self.spans.total(),
            "spans_by_name": dict(self.spans.most_common()),
            "rejected": self.rejected,
        }


def serve(app: _App, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], what: str, log: Path, within: float = 20
) -> None:
    """Return once ``url`` answers at all; BenchError (with the end of ``log``) if
    ``process`` exits first or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                tail = "".join(log.read_text(errors="replace").splitlines(True)[-8:])
                raise bench.BenchError(f"{what} did not start:\n{tail}") from None
            time.sleep(0.1)


@contextmanager
def helper_process(mode: str, workdir: Path, *options: str) -> Iterator[str]:
    """``python bench/webhooks.py MODE`` on a free port of 127.0.0.1 (with ``--pin``, on the
    workers' CPU), stopped on exit; its URL, once it answers."""
    port = bench.free_port()
    command = [*OTHER_CPU, sys.executable, __file__, mode, "--port", str(port), *options]
    log_path = workdir / f"{mode}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/stats", process, f"the {mode}", log_path)
        yield url
    finally:
        bench._stop(process)


def receiver_process(secret: str, workdir: Path) -> AbstractContextManager[str]:
    """The receiver in a process of its own; its URL."""
    return helper_process("receiver", workdir, "--secret", secret)


def receiver_stats(url: str) -> dict[str, Any]:
    """``GET /stats`` of the receiver (or of the trace sink)."""
    return dict(httpx.get(f"{url}/stats", timeout=30).json())


# -- metrics and tracing on (``--observability``) -------------------------------------


class Scraper:
    """Prometheus, as far as the load goes: every target's ``/metrics`` once a second, one
    after another in a thread of this process; the answers counted by kind of target."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._counts: dict[str, dict[str, int]] = {}
        self._targets: dict[str, tuple[str, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join()

    @contextmanager
    def target(self, kind: str, url: str, token: str | None = None) -> Iterator[None]:
        """Scrape ``url`` until the block ends (before what it scrapes is stopped)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with self._lock:
            self._targets[url] = (kind, headers)
            counts = self._counts.setdefault(kind, {"targets": 0, "succeeded": 0, "failed": 0})
            counts["targets"] += 1
        try:
            yield
        finally:
            with self._lock:
                del self._targets[url]

    def report(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {kind: dict(counts) for kind, counts in self._counts.items()}

    def _run(self) -> None:
        due = time.monotonic()
        with httpx.Client(timeout=10) as client:
            while not self._stopping.wait(max(0.0, due - time.monotonic())):
                with self._lock:
                    targets = list(self._targets.items())
                for url, (kind, headers) in targets:
                    try:
                        succeeded = client.get(url, headers=headers).status_code == 200
                    except httpx.HTTPError:
                        succeeded = False
                    with self._lock:
                        if url in self._targets:  # not a target stopped meanwhile
                            self._counts[kind]["succeeded" if succeeded else "failed"] += 1
                due = max(due + self.interval, time.monotonic())


@dataclass(frozen=True)
class Observability:
    """Metrics and tracing on, as a deployment runs them: every process exports its spans
    over OTLP/HTTP to the trace sink, and the scraper reads the server's ``/metrics`` and
    each worker's once a second."""

    sink_url: str
    scraper: Scraper

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with tracing (to the sink) and the server's ``/metrics`` on."""
        return {
            **env,
            "SUPPORT_OTEL": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.sink_url,
            "SUPPORT_METRICS_TOKEN": METRICS_TOKEN,
        }

    def report(self) -> dict[str, Any]:
        """What the sink has received, and how the scrapes went."""
        return {"traces": receiver_stats(self.sink_url), "scrapes": self.scraper.report()}


@contextmanager
def observability(workdir: Path) -> Iterator[Observability]:
    """The trace sink and the scraper, for one measurement; stopped on exit."""
    with helper_process("trace-sink", workdir) as sink_url, Scraper() as scraper:
        yield Observability(sink_url, scraper)


@contextmanager
def api_server(
    env: dict[str, str], workdir: Path, observed: Observability | None = None
) -> Iterator[bench.StartedServer]:
    """``supportctl serve`` (one process); its ``/metrics`` scraped when ``observed``."""
    with bench.started_server(env, workdir, workers=1) as server, ExitStack() as stack:
        if observed is not None:
            metrics = f"{server.base_url}/metrics"
            stack.enter_context(observed.scraper.target("server", metrics, METRICS_TOKEN))
        yield server


# -- the database side ------------------------------------------------------------------


def add_endpoint(database_url: str, url: str, secret: str) -> None:
    """The one endpoint, written directly, taking every event type."""
    import sqlalchemy as sa

    from support_requests.domain.clock import now_ms
    from support_requests.domain.webhooks import EVENT_TYPES
    from support_requests.storage.database import sync_url
    from support_requests.storage.outbox import endpoints_table
    from support_requests.webhooks.secrets import SecretBox

    engine = sa.create_engine(sync_url(database_url), poolclass=sa.NullPool)
    now = now_ms()
    with engine.begin() as connection:
        connection.execute(
            sa.insert(endpoints_table).values(
                id="we_bench",
                url=url + "/hooks",
                description="bench",
                events=list(EVENT_TYPES),
                secret=SecretBox(SECRET_KEY.encode()).seal(secret),
                enabled=True,
                disabled_reason=None,
                created_by="bench",
                created_at=now,
                updated_at=now,
            )
        )
    engine.dispose()


def pids_named(command: str) -> list[int]:
    """The processes of this machine whose name is ``command`` (Linux: /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):  # gone meanwhile
            if stat.read_text().partition(") ")[0].endswith(f"({command}"):
                pids.append(int(stat.parent.name))
    return pids


def cpu_seconds(pids: Iterable[int]) -> float:
    """User and system CPU so far of ``pids``, with their reaped children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().partition(") ")[2].split()
        except OSError:  # gone meanwhile
            continue
        total += sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL process on this machine so far, with the backends that
    exited (the postmaster's reaped children)."""
    return cpu_seconds(pids_named("postgres"))


class WorkerBackends:
    """CPU of the PostgreSQL backends serving the workers (``application_name``
    ``support-requests-worker…``) since this was made: their share of the database's CPU,
    told apart from the API's. A backend that exits meanwhile is not counted."""

    _NAMED = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE 'support-requests-worker%'"
    )

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._start = {pid: cpu_seconds([pid]) for pid in self._pids()}

    def _pids(self) -> list[int]:
        import sqlalchemy as sa

        from support_requests.storage.database import sync_url

        engine = sa.create_engine(sync_url(self._url), poolclass=sa.NullPool)
        with engine.connect() as connection:
            pids = [int(pid) for pid in connection.scalars(sa.text(self._NAMED))]
        engine.dispose()
        return pids

    def seconds(self) -> float:
        return sum(cpu_seconds([pid]) - self._start.get(pid, 0.0) for pid in self._pids())


def processes_cpu_seconds(processes: list[subprocess.Popen[bytes]]) -> float:
    """CPU of ``processes`` so far."""
    return cpu_seconds(process.pid for process in processes)


def table_counts(database_url: str) -> dict[str, int]:
    """Events written, and deliveries by status."""
    import sqlalchemy as sa

    from support_requests.storage.database import sync_url

    engine = sa.create_engine(sync_url(database_url), poolclass=sa.NullPool)
    with engine.connect() as connection:
        counts = {"events": int(connection.scalar(sa.text("SELECT count(*) FROM webhook_events")))}
        for status, count in connection.execute(
            sa.text("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        ):
            counts[status] = int(count)
    engine.dispose()
    return counts


def clear_outbox(database_url: str) -> None:
    import sqlalchemy as sa

    from support_requests.storage.database import sync_url

    engine = sa.create_engine(sync_url(database_url), poolclass=sa.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE webhook_deliveries, webhook_events"))
    engine.dispose()


def enqueue_backlog(database_url: str, events: int, requests: int, batch: int = 500) -> None:
    from support_requests.domain.clock import now_ms
    from support_requests.domain.webhooks import MESSAGE_CREATED
    from support_requests.storage import outbox
    from support_requests.storage.database import Database

    async def run() -> None:
        database = Database(database_url)
        try:
            for first in range(0, events, batch):
                async with database.writing() as connection:
                    await outbox.enqueue(
                        connection,
                        [
                            _event(n % requests, n, MESSAGE_CREATED, outbox.Event)
                            for n in range(first, min(first + batch, events))
                        ],
                        now_ms(),
                    )
        finally:
            await database.dispose()

    asyncio.run(run())


def _event(request_id: int, sequence: int, kind: str, event: Any) -> Any:
    data = {"requestId": request_id, "customerId": f"bench-{request_id}", "sequence": sequence}
    return event(kind, data, request_id=request_id, customer_id=f"bench-{request_id}")


def enqueue_steadily(database_url: str, rate: float, seconds: float, requests: int) -> int:
    """One event per transaction at ``rate`` per second; the number enqueued."""
    from support_requests.domain.clock import now_ms
    from support_requests.domain.webhooks import MESSAGE_CREATED
    from support_requests.storage import outbox
    from support_requests.storage.database import Database

    async def run() -> int:
        database = Database(database_url)
        sent = 0
        started = time.monotonic()
        try:
            while time.monotonic() - started < seconds:
                event = _event(sent % requests, sent, MESSAGE_CREATED, outbox.Event)
                async with database.writing() as connection:
                    await outbox.enqueue(connection, [event], now_ms())
                sent += 1
                await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        finally:
            await database.dispose()
        return sent

    return asyncio.run(run())


# -- workers --------------------------------------------------------------------------


@contextmanager
def worker_processes(
    env: dict[str, str],
    count: int,
    workdir: Path,
    *args: str,
    observed: Observability | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` ``supportctl worker`` processes, stopped on exit; with ``observed``, each
    serves its metrics on a port of its own, scraped from when it answers."""
    with ExitStack() as stack:
        started = []
        for index in range(count):
            port = bench.free_port() if observed else 0
            metrics = ("--metrics-port", str(port)) if observed else ()
            log_path = workdir / f"worker-{index}.log"
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    [*OTHER_CPU, bench.supportctl(), "worker", *args, *metrics],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            stack.callback(bench._stop, process)
            started.append((process, port, log_path))
        if observed is not None:
            for process, port, log_path in started:
                url = f"http://127.0.0.1:{port}/metrics"
                wait_until_answering(url, process, f"{log_path.stem}'s /metrics", log_path)
                stack.enter_context(observed.scraper.target("worker", url))
        yield [process for process, _, _ in started]


def wait_for_arrivals(
    url: str, count: int, within: float, workdir: Path | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        stats = receiver_stats(url)
        if stats["unique"] >= count:
            return stats
        if time.monotonic() > deadline:
            logs = ""
            if workdir is not None:
                for path in sorted(workdir.glob("worker-*.log")):
                    logs += f"\n{path.name}:\n" + "".join(path.read_text().splitlines(True)[-8:])
            raise bench.BenchError(f"only {stats['unique']} of {count} events arrived{logs}")
        time.sleep(0.2)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def delivery_rate(
    env: dict[str, str],
    url: str,
    workers: int,
    args: argparse.Namespace,
    workdir: Path,
    observed: Observability | None = None,
) -> dict[str, Any]:
    clear_outbox(env["SUPPORT_DATABASE_URL"])
    httpx.post(f"{url}/reset", timeout=10)
    enqueue_backlog(env["SUPPORT_DATABASE_URL"], args.events, args.requests)
    worker_args = ("--concurrency", str(args.concurrency), "--per-endpoint", str(args.per_endpoint))
    cpu_before = postgres_cpu_seconds()
    with worker_processes(env, workers, workdir, *worker_args, observed=observed) as processes:
        stats = wait_for_arrivals(url, args.events, 300, workdir)
        worker_cpu = processes_cpu_seconds(processes)
    cpu = postgres_cpu_seconds() - cpu_before
    seconds = (stats["last"] or 0) - (stats["first"] or 0)
    result = {
        "workers": workers,
        "events": args.events,
        "arrivals": stats["arrivals"],
        "unique": stats["unique"],
        "unverified": stats["unverified"],
        "seconds": round(seconds, 2),
        "events_per_s": round(args.events / seconds, 1) if seconds else None,
        "postgres_cpu_ms_per_event": round(1000 * cpu / args.events, 3),
        "worker_cpu_ms_per_event": round(1000 * worker_cpu / args.events, 3),
    }
    bench.log(f"delivery: {result}")
    return result


def delivery_lag(
    env: dict[str, str],
    url: str,
    args: argparse.Namespace,
    workdir: Path,
    observed: Observability | None = None,
) -> dict[str, Any]:
    clear_outbox(env["SUPPORT_DATABASE_URL"])
    httpx.post(f"{url}/reset", timeout=10)
    with worker_processes(env, 1, workdir, observed=observed):
        time.sleep(2)  # started and listening
        sent = enqueue_steadily(
            env["SUPPORT_DATABASE_URL"], args.rate, args.lag_seconds, args.requests
        )
        stats = wait_for_arrivals(url, sent, 60, workdir)
    lags = stats["lags_ms"]
    result = {
        "rate": args.rate,
        "events": sent,
        "p50_ms": round(percentile(lags, 0.5), 1),
        "p99_ms": round(percentile(lags, 0.99), 1),
        "max_ms": round(max(lags), 1),
        "mean_ms": round(statistics.fmean(lags), 1),
    }
    bench.log(f"lag: {result}")
    return result


def api_cost(
    env: dict[str, str],
    args: argparse.Namespace,
    workdir: Path,
    observed: Observability | None = None,
) -> dict[str, Any]:
    """create and reply under wrk: alternately without a worker and with one draining."""
    wrk = bench.ensure_wrk()
    minter = bench.Minter(JWT_SECRET)
    run_id = uuid.uuid4().hex[:8]
    who = bench.Callers(
        [minter.token(f"bench-{run_id}-{n:04d}", f"Bench {n}") for n in range(args.customers)],
        minter.token(str(uuid.uuid4()), "Bench Agent", admin=True),
    )
    wrk_args = argparse.Namespace(
        threads=2, connections=args.connections, timeout=10, warmup=1, duration=args.api_seconds
    )
    with api_server(env, workdir, observed) as server:
        api = bench.Api(server.base_url)
        seeded = bench.seed(api, who, args.api_requests, 3, 8)
        runnable, _ = bench.scenarios(who, seeded)
        chosen = [s for s in runnable if s.name in ("create", "reply")]
        phases: list[dict[str, Any]] = []
        # Alternated, each "with" against the mean of the runs either side of it: the
        # database grows from run to run, and a single before/after pair drifted by 25 %.
        for phase in ("without", *("with", "without") * args.api_pairs):
            before = table_counts(env["SUPPORT_DATABASE_URL"])
            with ExitStack() as stack:
                workers = []
                if phase == "with":
                    workers = stack.enter_context(
                        worker_processes(env, 1, workdir, observed=observed)
                    )
                    time.sleep(2)
                cpu_before = postgres_cpu_seconds()
                worker_cpu_before = processes_cpu_seconds(workers)
                backends = WorkerBackends(env["SUPPORT_DATABASE_URL"])
                measured = {s.name: bench.measure(wrk, api, s, workdir, wrk_args) for s in chosen}
                cpu = postgres_cpu_seconds() - cpu_before
                worker_cpu = processes_cpu_seconds(workers) - worker_cpu_before
                backend_cpu = backends.seconds()
            after = table_counts(env["SUPPORT_DATABASE_URL"])
            requests = sum(m["rps"] for m in measured.values()) * args.api_seconds
            entry = {
                "phase": phase,
                **{f"{name}_rps": m["rps"] for name, m in measured.items()},
                **{f"{name}_p99_ms": m["p99_ms"] for name, m in measured.items()},
                "events_written": after["events"] - before["events"],
                "delivered": after.get("succeeded", 0) - before.get("succeeded", 0),
                "postgres_cpu_ms_per_request": round(1000 * cpu / max(requests, 1), 3),
                # Of that, the workers' backends' (the rest is the API's, and PostgreSQL's
                # own processes'): what the worker's statements cost, apart from what they
                # make the API's cost.
                "worker_backends_cpu_seconds": round(backend_cpu, 2),
                # The worker's own CPU: on a machine of two cores it is taken from the API's
                # PostgreSQL as much as its statements are.
                "worker_cpu_seconds": round(worker_cpu, 2),
            }
            bench.log(f"api: {entry}")
            phases.append(entry)
    cost: dict[str, float | None] = {}
    each: dict[str, list[float]] = {}
    for name in ("create", "reply"):
        ratios = []
        for index in range(1, len(phases), 2):
            baseline = (phases[index - 1][f"{name}_rps"] + phases[index + 1][f"{name}_rps"]) / 2
            if baseline:
                ratios.append(phases[index][f"{name}_rps"] / baseline)
        cost[name] = round(100 * (1 - statistics.fmean(ratios)), 1) if ratios else None
        each[name] = [round(100 * (1 - ratio), 1) for ratio in ratios]
    # Each "with" run's own cost, for the spread: one run's varied by ±8 points here.
    return {"phases": phases, "cost_percent": cost, "cost_percent_each": each}


@contextmanager
def listening(database_url: str) -> Iterator[None]:
    """A connection that LISTENs on the deliveries' channel and takes every notification,
    as an idle worker's does, until the block ends."""
    import psycopg

    from support_requests.storage.database import libpq_url
    from support_requests.storage.models import NOTIFY_CHANNEL

    conninfo = libpq_url(database_url)
    stop = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            ready.set()
            while not stop.is_set():
                for _ in connection.notifies(timeout=0.2):
                    pass

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def notify_cost(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """PostgreSQL CPU per enqueuing transaction, without and with a listener, alternated."""
    database_url = env["SUPPORT_DATABASE_URL"]
    runs = []
    for phase in ("without", *("with", "without") * args.notify_pairs):
        clear_outbox(database_url)
        with listening(database_url) if phase == "with" else nullcontext():
            cpu_before = postgres_cpu_seconds()
            sent = enqueue_steadily(database_url, 1e9, args.notify_seconds, args.requests)
            cpu = postgres_cpu_seconds() - cpu_before
        runs.append({"phase": phase, "transactions": sent, "cpu_ms": round(1000 * cpu / sent, 3)})
        bench.log(f"notify: {runs[-1]}")
    ratios = [
        runs[index]["cpu_ms"]
        / statistics.fmean([runs[index - 1]["cpu_ms"], runs[index + 1]["cpu_ms"]])
        for index in range(1, len(runs), 2)
    ]
    return {"runs": runs, "with_over_without": round(statistics.fmean(ratios), 3)}


def measure_part(
    part: str,
    env: dict[str, str],
    url: str,
    args: argparse.Namespace,
    workdir: Path,
    observed: Observability | None = None,
) -> Any:
    """One of ``PARTS``; with ``observed``, metrics and tracing on (``env`` says so too)."""
    if part == "api":
        clear_outbox(env["SUPPORT_DATABASE_URL"])
        return api_cost(env, args, workdir, observed)
    if part == "notify":
        return notify_cost(env, args)
    with ExitStack() as stack:
        if observed is not None:
            # Prometheus scrapes the API busy or not, and each scrape reads the outbox's
            # gauges from the database the workers claim from.
            stack.enter_context(api_server(env, workdir, observed))
        if part == "delivery":
            return [delivery_rate(env, url, n, args, workdir, observed) for n in (1, 3)]
        return delivery_lag(env, url, args, workdir, observed)


def measure_observed(
    part: str, env: dict[str, str], url: str, args: argparse.Namespace, workdir: Path
) -> tuple[Any, dict[str, Any]]:
    """``measure_part`` with metrics and tracing on; with what the sink received and how
    the scrapes went."""
    with observability(workdir) as observed:
        result = measure_part(part, observed.environment(env), url, args, workdir, observed)
        seen = observed.report()
    traces = seen["traces"]
    scrapes = ", ".join(f"{kind} {counts}" for kind, counts in seen["scrapes"].items())
    bench.log(
        f"observability: {traces['exports']} exports, {traces['spans']} spans, "
        f"{traces['bytes']} bytes, {traces['rejected']} rejected; scrapes: {scrapes}"
    )
    return result, seen


def figures(run: dict[str, Any]) -> dict[str, float | None]:
    """The figures compared off and on, from one run's report."""
    found: dict[str, float | None] = {}
    for delivery in run.get("delivery", []):
        n = delivery["workers"]
        found[f"events_per_s_{n}_worker{'s' if n > 1 else ''}"] = delivery["events_per_s"]
    if "lag" in run:
        found["lag_p50_ms"] = run["lag"]["p50_ms"]
        found["lag_p99_ms"] = run["lag"]["p99_ms"]
    if "api" in run:
        for name in ("create", "reply"):
            for phase in ("without", "with"):
                rates = [p[f"{name}_rps"] for p in run["api"]["phases"] if p["phase"] == phase]
                found[f"{name}_rps_{phase}_worker"] = round(statistics.fmean(rates), 1)
    return found


def on_off(off: dict[str, Any], on: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each figure off and on, and on / off."""
    compared = {}
    found_on = figures(on)
    for name, before in figures(off).items():
        after = found_on[name]
        ratio = round(after / before, 3) if before and after is not None else None
        compared[name] = {"off": before, "on": after, "ratio": ratio}
        bench.log(f"off -> on: {name:<26} {before} -> {after} ({ratio}x)")
    return compared


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mode", nargs="?", default="bench", choices=("bench", "receiver", "trace-sink")
    )
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL server (any database on it)")
    parser.add_argument("--events", type=int, default=3000, help="backlog size (3000)")
    parser.add_argument("--requests", type=int, default=500, help="requests they spread over")
    parser.add_argument("--concurrency", type=int, default=32, help="per worker (32)")
    parser.add_argument("--per-endpoint", type=int, default=64, help="per endpoint (64)")
    parser.add_argument("--rate", type=float, default=100.0, help="lag: events per second")
    parser.add_argument("--lag-seconds", type=float, default=20.0, help="lag: how long (20)")
    parser.add_argument("--api-seconds", type=int, default=10, help="api: wrk seconds per run")
    parser.add_argument(
        "--api-pairs",
        type=int,
        default=2,
        help="api: runs with a worker, each between two without (2)",
    )
    parser.add_argument("--api-requests", type=int, default=5, help="api: seeded per customer")
    parser.add_argument("--customers", type=int, default=100, help="api: customers")
    parser.add_argument("--connections", type=int, default=32, help="api: wrk connections")
    parser.add_argument(
        "--parts", default="delivery,lag,api", help=f"which measurements ({', '.join(PARTS)})"
    )
    parser.add_argument(
        "--notify-seconds", type=float, default=5.0, help="notify: seconds per run (5)"
    )
    parser.add_argument(
        "--notify-pairs", type=int, default=5, help="notify: runs with a listener (5)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="workers and receiver on CPU 1, the server, wrk and this script on CPU 0 "
        "(PostgreSQL is not pinned): the worker as on another host, its cost to the API "
        "only what it costs the database",
    )
    parser.add_argument(
        "--pin-postgres",
        action="store_true",
        help="with --pin: PostgreSQL's processes on CPU 0 too, beside the server, for the run "
        "(their CPU affinity restored on exit; needs the right to change it): the workers' own "
        "CPU then takes nothing from the API, as with workers on another host",
    )
    parser.add_argument(
        "--observability",
        choices=("off", "on", "both"),
        default="off",
        help="metrics and tracing: off (default); on: spans exported over OTLP/HTTP to a "
        "local sink (with --pin on CPU 1), the server's and each worker's /metrics scraped "
        "every second; both: each part off, then on, and the ratios",
    )
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == "bench" and not args.pg:
        parser.error("--pg is required (several workers need PostgreSQL)")
    if args.pin_postgres and not args.pin:
        parser.error("--pin-postgres goes with --pin")
    if args.api_pairs < 1 or args.notify_pairs < 1:
        parser.error("--api-pairs and --notify-pairs must be at least 1")
    return args


@contextmanager
def postgres_on_cpu_0() -> Iterator[None]:
    """Every PostgreSQL process of this machine on CPU 0 (backends started meanwhile inherit
    it from the postmaster), each put back on the CPUs it had on exit."""
    everywhere = set(range(os.cpu_count() or 1))
    saved = {}
    for pid in pids_named("postgres"):
        with suppress(OSError):
            saved[pid] = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, {0})
    try:
        yield
    finally:
        for pid in pids_named("postgres"):
            with suppress(OSError):
                os.sched_setaffinity(pid, saved.get(pid, everywhere))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.mode != "bench":
        serve(Receiver(args.secret) if args.mode == "receiver" else TraceSink(), args.port)
        return 0
    from support_requests.webhooks.secrets import new_secret

    parts = [part for part in PARTS if part in args.parts.split(",")]
    modes = ("off", "on") if args.observability == "both" else (args.observability,)
    runs: dict[str, dict[str, Any]] = {mode: {} for mode in modes}
    seen: dict[str, Any] = {}
    if args.pin:
        os.sched_setaffinity(0, {0})
        OTHER_CPU[:] = ["taskset", "--cpu-list", "1"]
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "command": "python bench/webhooks.py " + " ".join(sys.argv[1:]),
            "pinned": args.pin,
            "postgres_pinned": args.pin_postgres,
            "observability": args.observability,
        }
    }
    secret = new_secret()
    with (
        tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp,
        bench.fresh_postgres(args.pg) as database_url,
        postgres_on_cpu_0() if args.pin_postgres else nullcontext(),
    ):
        workdir = Path(tmp)
        env = bench.server_environment(database_url, workdir, JWT_SECRET)
        env.update(
            SUPPORT_SECRET_KEY=SECRET_KEY,
            SUPPORT_WEBHOOK_ALLOW_PRIVATE="1",
            SUPPORT_WEBHOOK_ALLOW_HTTP="1",
            SUPPORT_WEBHOOK_WORKER="0",
            SUPPORT_OTEL="off",  # off even with OTEL_EXPORTER_OTLP_ENDPOINT in this environment
        )
        bench.initialise_database(env)
        with receiver_process(secret, workdir) as url:
            add_endpoint(database_url, url, secret)
            for part in parts:
                for mode in modes:
                    if args.observability != "off":
                        bench.log(f"{part}, observability {mode}")
                    if mode == "off":
                        runs[mode][part] = measure_part(part, env, url, args, workdir)
                    else:
                        runs[mode][part], seen[part] = measure_observed(
                            part, env, url, args, workdir
                        )
    if "on" in runs:
        runs["on"]["observability"] = seen
    report.update(runs[modes[0]])
    if len(modes) > 1:
        report["on"] = runs["on"]
        report["on_off"] = on_off(runs["off"], runs["on"])
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as error:
        bench.log(f"error: {error}")
        sys.exit(1)
