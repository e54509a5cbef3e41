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
   (each "with" against the mean of the runs either side of it), and the CPU of the
   PostgreSQL processes per API request in each run. The API writes events only
   once the outbox is wired into its write path; until then ``events written`` reads 0
   and the worker has nothing to drain.

Prints a table and writes the numbers as JSON (``--out``). Needs wrk for ``api`` (see
bench/README.md); run it with the project's Python environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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


# -- the receiver (``python bench/webhooks.py receiver``) ---------------------------------


class Receiver:
    """An ASGI app: verifies and counts deliveries; ``GET /stats`` reports, ``POST /reset``
    starts over."""

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
        answer: Any = {"ok": True}
        if scope["method"] == "GET":
            answer = self.stats()
        elif scope["path"] == "/reset":
            self.reset()
        else:
            self.record(scope, body)
        payload = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

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


def serve_receiver(port: int, secret: str) -> None:
    import uvicorn

    uvicorn.run(
        Receiver(secret), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


@contextmanager
def receiver_process(secret: str, workdir: Path) -> Iterator[str]:
    port = bench.free_port()
    command = [
        *OTHER_CPU,
        *(sys.executable, __file__, "receiver", "--port", str(port), "--secret", secret),
    ]
    with (workdir / "receiver.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/stats", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise bench.BenchError("the receiver did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        bench._stop(process)


def receiver_stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/stats", timeout=30).json())


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


def postgres_cpu_seconds() -> float:
    """User and system CPU of every PostgreSQL process on this machine so far, with the
    backends that exited (the postmaster's reaped children), from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        name, _, rest = text.partition(") ")
        if name.endswith("(postgres"):
            fields = rest.split()
            total += sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
    return total / ticks


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
def worker_processes(env: dict[str, str], count: int, workdir: Path, *args: str) -> Iterator[None]:
    with ExitStack() as stack:
        for index in range(count):
            with (workdir / f"worker-{index}.log").open("ab") as log:
                process = subprocess.Popen(
                    [*OTHER_CPU, bench.supportctl(), "worker", *args],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            stack.callback(bench._stop, process)
        yield


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
    env: dict[str, str], url: str, workers: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    clear_outbox(env["SUPPORT_DATABASE_URL"])
    httpx.post(f"{url}/reset", timeout=10)
    enqueue_backlog(env["SUPPORT_DATABASE_URL"], args.events, args.requests)
    worker_args = ("--concurrency", str(args.concurrency), "--per-endpoint", str(args.per_endpoint))
    cpu_before = postgres_cpu_seconds()
    with worker_processes(env, workers, workdir, *worker_args):
        stats = wait_for_arrivals(url, args.events, 300, workdir)
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
    }
    bench.log(f"delivery: {result}")
    return result


def delivery_lag(
    env: dict[str, str], url: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    clear_outbox(env["SUPPORT_DATABASE_URL"])
    httpx.post(f"{url}/reset", timeout=10)
    with worker_processes(env, 1, workdir):
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


def api_cost(env: dict[str, str], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
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
    with bench.started_server(env, workdir, workers=1) as server:
        api = bench.Api(server.base_url)
        seeded = bench.seed(api, who, args.api_requests, 3, 8)
        runnable, _ = bench.scenarios(who, seeded)
        chosen = [s for s in runnable if s.name in ("create", "reply")]
        phases: list[dict[str, Any]] = []
        # Alternated, each "with" against the mean of the runs either side of it: the
        # database grows from run to run, and a single before/after pair drifted by 25 %.
        for phase in ("without", "with", "without", "with", "without"):
            before = table_counts(env["SUPPORT_DATABASE_URL"])
            with ExitStack() as stack:
                if phase == "with":
                    stack.enter_context(worker_processes(env, 1, workdir))
                    time.sleep(2)
                cpu_before = postgres_cpu_seconds()
                measured = {s.name: bench.measure(wrk, api, s, workdir, wrk_args) for s in chosen}
                cpu = postgres_cpu_seconds() - cpu_before
            after = table_counts(env["SUPPORT_DATABASE_URL"])
            requests = sum(m["rps"] for m in measured.values()) * args.api_seconds
            entry = {
                "phase": phase,
                **{f"{name}_rps": m["rps"] for name, m in measured.items()},
                **{f"{name}_p99_ms": m["p99_ms"] for name, m in measured.items()},
                "events_written": after["events"] - before["events"],
                "delivered": after.get("succeeded", 0) - before.get("succeeded", 0),
                "postgres_cpu_ms_per_request": round(1000 * cpu / max(requests, 1), 3),
            }
            bench.log(f"api: {entry}")
            phases.append(entry)
    cost: dict[str, float | None] = {}
    for name in ("create", "reply"):
        ratios = []
        for index in (1, 3):
            baseline = (phases[index - 1][f"{name}_rps"] + phases[index + 1][f"{name}_rps"]) / 2
            if baseline:
                ratios.append(phases[index][f"{name}_rps"] / baseline)
        cost[name] = round(100 * (1 - statistics.fmean(ratios)), 1) if ratios else None
    return {"phases": phases, "cost_percent": cost}


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=("bench", "receiver"))
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL server (any database on it)")
    parser.add_argument("--events", type=int, default=3000, help="backlog size (3000)")
    parser.add_argument("--requests", type=int, default=500, help="requests they spread over")
    parser.add_argument("--concurrency", type=int, default=32, help="per worker (32)")
    parser.add_argument("--per-endpoint", type=int, default=64, help="per endpoint (64)")
    parser.add_argument("--rate", type=float, default=100.0, help="lag: events per second")
    parser.add_argument("--lag-seconds", type=float, default=20.0, help="lag: how long (20)")
    parser.add_argument("--api-seconds", type=int, default=10, help="api: wrk seconds per run")
    parser.add_argument("--api-requests", type=int, default=5, help="api: seeded per customer")
    parser.add_argument("--customers", type=int, default=100, help="api: customers")
    parser.add_argument("--connections", type=int, default=32, help="api: wrk connections")
    parser.add_argument("--parts", default="delivery,lag,api", help="which measurements")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="workers and receiver on CPU 1, the server, wrk and this script on CPU 0 "
        "(PostgreSQL is not pinned): the worker as on another host, its cost to the API "
        "only what it costs the database",
    )
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == "bench" and not args.pg:
        parser.error("--pg is required (several workers need PostgreSQL)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.mode == "receiver":
        serve_receiver(args.port, args.secret)
        return 0
    from support_requests.webhooks.secrets import new_secret

    parts = set(args.parts.split(","))
    if args.pin:
        os.sched_setaffinity(0, {0})
        OTHER_CPU[:] = ["taskset", "--cpu-list", "1"]
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "command": "python bench/webhooks.py " + " ".join(sys.argv[1:]),
            "pinned": args.pin,
        }
    }
    secret = new_secret()
    with (
        tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp,
        bench.fresh_postgres(args.pg) as database_url,
    ):
        workdir = Path(tmp)
        env = bench.server_environment(database_url, workdir, JWT_SECRET)
        env.update(
            SUPPORT_SECRET_KEY=SECRET_KEY,
            SUPPORT_WEBHOOK_ALLOW_PRIVATE="1",
            SUPPORT_WEBHOOK_ALLOW_HTTP="1",
            SUPPORT_WEBHOOK_WORKER="0",
        )
        bench.initialise_database(env)
        with receiver_process(secret, workdir) as url:
            add_endpoint(database_url, url, secret)
            if "delivery" in parts:
                report["delivery"] = [
                    delivery_rate(env, url, workers, args, workdir) for workers in (1, 3)
                ]
            if "lag" in parts:
                report["lag"] = delivery_lag(env, url, args, workdir)
            if "api" in parts:
                clear_outbox(database_url)
                report["api"] = api_cost(env, args, workdir)
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
