#!/usr/bin/env python3
"""Soak a support-requests deployment: minutes of steady mixed load, its memory sampled.

    python bench/soak.py --start                      # 5 minutes on a fresh SQLite file
    python bench/soak.py --start --pg postgresql://postgres@127.0.0.1:5432/postgres
    SUPPORT_JWT_SECRET=... python bench/soak.py --url http://127.0.0.1:8080 --pid 4242

It sets up and seeds exactly as ``bench/run.py`` does (it imports it: --start, --pg, --url,
tokens, --preload, the seeding through the API, and what the scenarios of ``--mix`` need
besides: the 1 MiB PNG of the attachment scenarios, the staff replies behind ``unread``),
then runs wrk with ``bench/lua/requests.lua`` in slices of ``--sample-every`` seconds (10)
for ``--minutes`` (5), over one file of prepared requests that mixes run.py's scenarios
(``--mix``, any of them, by default detail, list and reply, in equal shares). After each
slice it reads the resident memory of the server: VmRSS from /proc/<pid>/status, summed over
the server process and all its descendants (the workers of ``--workers N``). It prints a row
per sample, then a verdict: RSS at the end of the warm-up (``--warmup``, 60 s), RSS at the
end, the growth in between, and the least-squares slope in MiB/minute over the samples from
the end of the warm-up on, against the target of 0.5 MiB/minute; "flat" when the growth is
under 5%, "growing" otherwise. It measures, it does not judge: it exits 0 either way.

With ``--webhooks`` (and --start) the events of the load are delivered too: one endpoint
taking every event type points at a receiver on 127.0.0.1 (``bench/webhooks.py``'s, which
verifies every signature); on SQLite the server's embedded worker delivers, on PostgreSQL a
``supportctl worker`` this script starts, whose RSS is sampled as a column of its own. Each
row then shows the deliveries pending; at the end, once the backlog drained (60 s at most),
it prints the deliveries made, pending, failed and retried, and what the receiver verified.

The database grows during the soak (each reply adds a message to one of the seeded requests,
each upload a 1 MiB file that stays unattached; the hot request the detail reads is never
replied to, so the detail stays the same size), and only the server's RSS (and the worker's)
is measured: not the database server's, not the receiver's, not wrk's.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import run as bench

SOAK_MIX = ("detail", "list", "reply")
FLAT_BELOW_PERCENT = 5.0
# The slope issue 17 asks of a 30-minute soak (the full mix, with deliveries).
SLOPE_TARGET_MIB_PER_MINUTE = 0.5
# With --webhooks: how long the deliveries may take to catch up once the load stops.
DRAIN_SECONDS = 60
SOCKET_ERRORS = ("connect_errors", "read_errors", "write_errors", "timeouts")


# -- memory ----------------------------------------------------------------------------


def vm_rss_kib(pid: int) -> int | None:
    """VmRSS of one process in KiB; None if it is gone (or has no memory of its own)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_rss_kib(pid: int, what: str = "server") -> tuple[int, int]:
    """VmRSS summed over ``pid`` and all its descendants (KiB), and how many they are."""
    if vm_rss_kib(pid) is None:
        raise bench.BenchError(f"the {what} process {pid} is gone")
    children = children_by_parent()
    total = count = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        rss = vm_rss_kib(current)
        if rss is None:
            continue
        total += rss
        count += 1
        pending.extend(children.get(current, []))
    return total, count


# -- samples and the verdict -----------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The server's RSS after one slice of load, and wrk's numbers for that slice; with
    --webhooks, the deliveries pending then and (on PostgreSQL) the worker's RSS."""

    t_s: float
    rss_kib: int
    processes: int
    requests: int
    slice_requests: int
    slice_s: float
    http_errors: int
    socket_errors: int
    worker_rss_kib: int | None = None
    pending: int | None = None

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def worker_rss_mib(self) -> float | None:
        return None if self.worker_rss_kib is None else self.worker_rss_kib / 1024

    @property
    def rps(self) -> float | None:
        return self.slice_requests / self.slice_s if self.slice_s else None

    def as_dict(self) -> dict[str, Any]:
        rps, worker = self.rps, self.worker_rss_mib
        return {
            **asdict(self),
            "t_s": round(self.t_s, 2),
            "slice_s": round(self.slice_s, 3),
            "rss_mib": round(self.rss_mib, 2),
            "worker_rss_mib": None if worker is None else round(worker, 2),
            "rps": None if rps is None else round(rps, 1),
        }


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 2:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return 60 * sum((t - mean_t) * (y - mean_y) for t, y in points) / spread


def verdict(
    samples: list[Sample], warm_index: int, *, worker: bool = False
) -> dict[str, Any] | None:
    """RSS at the end of the warm-up (``samples[warm_index]``) against the last sample, and
    the slope from the warm-up on, of the server (or of the webhook ``worker``); None when
    the samples stop before the warm-up ends, or have no worker RSS."""
    if warm_index >= len(samples):
        return None
    measured = samples[warm_index:]
    points = [(s.t_s, s.worker_rss_mib if worker else s.rss_mib) for s in measured]
    series = [(t, mib) for t, mib in points if mib is not None]
    if len(series) < len(points):
        return None
    (warm_t, warm_mib), (end_t, end_mib) = series[0], series[-1]
    growth = end_mib - warm_mib
    percent = 100 * growth / warm_mib
    slope = slope_per_minute(series)
    return {
        "warm_t_s": round(warm_t, 2),
        "warm_rss_mib": round(warm_mib, 2),
        "end_t_s": round(end_t, 2),
        "end_rss_mib": round(end_mib, 2),
        "growth_mib": round(growth, 2),
        "growth_percent": round(percent, 2),
        "slope_mib_per_minute": None if slope is None else round(slope, 3),
        "slope_samples": len(series),
        "slope_target_mib_per_minute": SLOPE_TARGET_MIB_PER_MINUTE,
        "slope_under_target": None if slope is None else slope < SLOPE_TARGET_MIB_PER_MINUTE,
        "flat_below_percent": FLAT_BELOW_PERCENT,
        "result": "flat" if percent < FLAT_BELOW_PERCENT else "growing",
    }


# -- output ----------------------------------------------------------------------------

COLUMNS = (("time", 6), ("RSS MiB", 8), ("requests", 10), ("req/s", 7), ("errors", 6))
WORKER_COLUMN = ("worker MiB", 10)
PENDING_COLUMN = ("pending", 7)


def columns(worker: bool, deliveries: bool) -> tuple[tuple[str, int], ...]:
    """The table's columns: the worker's RSS after the server's, the deliveries pending last."""
    first, rest = COLUMNS[:2], COLUMNS[2:]
    return (
        first
        + ((WORKER_COLUMN,) if worker else ())
        + rest
        + ((PENDING_COLUMN,) if deliveries else ())
    )


def clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def table_header(shown: tuple[tuple[str, int], ...] = COLUMNS) -> str:
    rule = "|" + "|".join("-" * (w + 1) + ":" for _, w in shown) + "|"
    return "| " + " | ".join(n.rjust(w) for n, w in shown) + " |\n" + rule


def table_row(sample: Sample, shown: tuple[tuple[str, int], ...] = COLUMNS) -> str:
    rps, worker = sample.rps, sample.worker_rss_mib
    cells = {
        "time": clock(sample.t_s),
        "RSS MiB": f"{sample.rss_mib:.1f}",
        WORKER_COLUMN[0]: "-" if worker is None else f"{worker:.1f}",
        "requests": f"{sample.requests:,}",
        "req/s": "-" if rps is None else f"{rps:,.0f}",
        "errors": str(sample.http_errors + sample.socket_errors),
        PENDING_COLUMN[0]: "-" if sample.pending is None else f"{sample.pending:,}",
    }
    return "| " + " | ".join(cells[name].rjust(w) for name, w in shown) + " |"


def verdict_line(found: dict[str, Any] | None, label: str = "verdict") -> str:
    if found is None:
        return f"{label}: none, the soak stopped before the end of the warm-up"
    slope = found["slope_mib_per_minute"]
    target = f"target under {found['slope_target_mib_per_minute']} MiB/min"
    if slope is not None:
        target += ": met" if found["slope_under_target"] else ": missed"
    return (
        f"{label}: RSS {found['warm_rss_mib']:.1f} MiB after the warm-up "
        f"({clock(found['warm_t_s'])}), {found['end_rss_mib']:.1f} MiB at the end "
        f"({clock(found['end_t_s'])}): {found['growth_mib']:+.1f} MiB "
        f"({found['growth_percent']:+.1f}%), slope "
        + ("n/a" if slope is None else f"{slope:+.2f} MiB/min")
        + f" over {found['slope_samples']} samples ({target}): {found['result']}"
    )


def deliveries_line(found: dict[str, Any]) -> str:
    counts, received = found["deliveries"], found["receiver"]
    lag = found["lag_ms"]
    return (
        f"deliveries: {counts['events']:,} events written; {counts['succeeded']:,} delivered, "
        f"{counts['pending']:,} pending, {counts['failed']:,} failed, "
        f"{counts['retried']:,} retried; the receiver verified {received['arrivals']:,} "
        f"({received['unique']:,} distinct), {received['unverified']:,} unverified; lag p50 "
        f"{lag['p50']:,.0f} ms, p99 {lag['p99']:,.0f} ms, max {lag['max']:,.0f} ms"
    )


def emit(line: str) -> None:
    print(line, flush=True)


# -- deliveries (--webhooks) ----------------------------------------------------------


def webhook_server_env() -> list[str]:
    """``--server-env`` assignments for delivering to the endpoint bench/webhooks.py
    registers: the key its secret is sealed with, and a plain-http receiver on 127.0.0.1."""
    import webhooks as delivery_bench  # bench/webhooks.py

    return [
        f"SUPPORT_SECRET_KEY={delivery_bench.SECRET_KEY}",
        "SUPPORT_WEBHOOK_ALLOW_PRIVATE=1",
        "SUPPORT_WEBHOOK_ALLOW_HTTP=1",
    ]


@dataclass(frozen=True)
class Deliveries:
    """The soak's webhook endpoint: the receiver it points at, the database its deliveries
    are in, and the ``supportctl worker`` delivering them (None: the server's embedded one)."""

    database_url: str
    receiver_url: str
    worker_pid: int | None
    worker_log: Path | None

    def pending(self) -> int:
        import webhooks as delivery_bench

        return delivery_bench.table_counts(self.database_url).get("pending", 0)

    def worker_rss_kib(self) -> int | None:
        if self.worker_pid is None:
            return None
        try:
            return tree_rss_kib(self.worker_pid, "webhook worker")[0]
        except bench.BenchError as gone:
            tail = self.worker_log.read_text(errors="replace")[-2000:] if self.worker_log else ""
            raise bench.BenchError(f"{gone}:\n{tail}") from None

    def drain(self, within: float) -> float:
        """Wait until no delivery is pending, ``within`` seconds at most; the seconds waited."""
        started = time.monotonic()
        try:
            while self.pending() and time.monotonic() - started < within:
                time.sleep(1)
        except KeyboardInterrupt:
            bench.log("interrupted: reporting the deliveries as they are")
        return time.monotonic() - started

    def report(self) -> dict[str, Any]:
        """Events and deliveries by status from the database, and what the receiver got."""
        import webhooks as delivery_bench

        counts = delivery_bench.table_counts(self.database_url)
        received = delivery_bench.receiver_stats(self.receiver_url)
        lags = received.pop("lags_ms")
        return {
            "deliveries": {
                "events": counts.get("events", 0),
                "succeeded": counts.get("succeeded", 0),
                "pending": counts.get("pending", 0),
                "failed": counts.get("failed", 0),
                "retried": retried_deliveries(self.database_url),
            },
            "receiver": {k: received[k] for k in ("arrivals", "unique", "unverified")},
            "lag_ms": {
                "p50": round(delivery_bench.percentile(lags, 0.5), 1),
                "p99": round(delivery_bench.percentile(lags, 0.99), 1),
                "max": round(max(lags, default=0.0), 1),
            },
        }


def count_of(database_url: str, query: str) -> int:
    """One number read from the database (a connection of its own, closed after)."""
    import sqlalchemy as sa

    from support_requests.storage.database import sync_url

    engine = sa.create_engine(sync_url(database_url), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(sa.text(query)) or 0)
    finally:
        engine.dispose()


def retried_deliveries(database_url: str) -> int:
    """Deliveries that took more than one attempt (an answer other than 2xx, or none)."""
    return count_of(database_url, "SELECT count(*) FROM webhook_deliveries WHERE attempts > 1")


@contextmanager
def webhook_deliveries(target: bench.Deployment, server_env: list[str]) -> Iterator[Deliveries]:
    """bench/webhooks.py's receiver on 127.0.0.1 and its endpoint (every event type); on
    PostgreSQL a ``supportctl worker`` with the server's configuration (on SQLite the
    server delivers). All stopped on exit."""
    import webhooks as delivery_bench

    from support_requests.webhooks.secrets import new_secret

    assert target.database_url is not None  # --webhooks needs --start
    secret = new_secret()
    with ExitStack() as stack:
        url = stack.enter_context(delivery_bench.receiver_process(secret, target.workdir))
        delivery_bench.add_endpoint(target.database_url, url, secret)
        worker_pid = worker_log = None
        if bench._database_kind(target.database_url) == "postgresql":
            # The worker checks no token: bench/webhooks.py's JWT secret stands in.
            env = bench.server_environment(
                target.database_url, target.workdir, delivery_bench.JWT_SECRET
            )
            env.update(bench.server_variables(server_env))
            stack.enter_context(delivery_bench.worker_processes(env, 1, target.workdir))
            worker_log = target.workdir / "worker-0.log"
            worker_pid = started_worker(worker_log)
        bench.log(
            f"webhooks: every event to {url}/hooks, delivered by "
            + (f"supportctl worker (pid {worker_pid})" if worker_pid else "the server")
        )
        yield Deliveries(target.database_url, url, worker_pid, worker_log)


def argv_of(pid: int) -> list[str]:
    """A process's command line ([] once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def started_worker(log_path: Path, within: float = 30) -> int:
    """The pid of the ``supportctl worker`` this script started, once its log says it runs."""
    deadline = time.monotonic() + within
    while True:
        pids = [p for p in children_by_parent().get(os.getpid(), []) if "worker" in argv_of(p)]
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        if pids and "webhook worker started" in log:
            return pids[0]
        if time.monotonic() > deadline:
            raise bench.BenchError(f"supportctl worker did not start within {within:.0f} s:\n{log}")
        time.sleep(0.2)


# -- the soak --------------------------------------------------------------------------


def mixed_calls(chosen: list[bench.Scenario]) -> list[bench.Call]:
    """Equal shares, interleaved: call i of each scenario in turn, for as many rounds as the
    longest scenario has calls (the reply scenario's calls go to every seeded request)."""
    rounds = max(len(s.calls) for s in chosen)
    return [s.calls[i % len(s.calls)] for i in range(rounds) for s in chosen]


def sqlite_bytes(database_url: str | None) -> int | None:
    """The size of a local SQLite database with its WAL file, else None."""
    if not database_url or not database_url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    path = make_url(database_url).database
    if not path or not Path(path).exists():
        return None
    return sum(Path(p).stat().st_size for p in (path, f"{path}-wal") if Path(p).exists())


def postgres_bytes(database_url: str | None) -> int | None:
    """The size of a PostgreSQL database (``pg_database_size``), else None."""
    if bench._database_kind(database_url) != "postgresql":
        return None
    assert database_url is not None
    return count_of(database_url, "SELECT pg_database_size(current_database())")


def seeded_mix(
    args: argparse.Namespace, target: bench.Deployment
) -> tuple[list[bench.Scenario], dict[str, str], dict[str, Any]]:
    """The scenarios of --mix that can run, and why the others cannot, after seeding what
    they need as bench/run.py does: the 1 MiB PNG of the attachment scenarios, the staff
    replies behind ``unread``; what that seeding made."""
    attachment = None
    if any(name in bench.ATTACHMENT_SCENARIOS for name in args.mix):
        attachment = bench.seed_attachment(target.api, target.who, target.workdir)
    badge = (
        bench.seed_unread(target.api, target.who, target.seeded) if "unread" in args.mix else None
    )
    available, skipped = bench.scenarios(target.who, target.seeded, attachment)
    chosen = [s for s in available if s.name in args.mix]
    skipped = {k: v for k, v in skipped.items() if k in args.mix}
    for name, why in skipped.items():
        bench.log(f"warning: {name} left out of the mix: {why}")
    if not chosen:
        raise bench.BenchError("nothing left to load in --mix")
    seeded = {
        "attachment": None
        if attachment is None
        else {"id": attachment.id, "bytes": attachment.size, "etag": attachment.etag is not None},
        "unread": badge,
    }
    return chosen, skipped, seeded


def soak(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Set up as bench/run.py does, load the mix slice by slice, sample the server's RSS (and,
    with --webhooks, the deliveries and the worker's RSS)."""
    wrk = bench.ensure_wrk()
    run_id = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    slices = slice_count(args)
    warm_index = warm_slice(args)
    with bench.deployment(args, run_id) as target, ExitStack() as stack:
        server, api = target.server, target.api
        pid = server.process.pid if server else args.pid
        chosen, skipped, seeded = seeded_mix(args, target)
        for scenario in chosen:
            bench.check_scenario(api, scenario)
        lines = [call.line(api.prefix) + "\n" for call in mixed_calls(chosen)]
        requests_file = target.workdir / "soak.tsv"
        deliveries = None
        if args.webhooks:
            deliveries = stack.enter_context(webhook_deliveries(target, args.server_env))
        shown = columns(
            deliveries is not None and deliveries.worker_pid is not None, deliveries is not None
        )
        database_before = sqlite_bytes(target.database_url), postgres_bytes(target.database_url)

        def sample(elapsed: float, total: int, raw: dict[str, Any] | None) -> Sample:
            rss, processes = tree_rss_kib(pid)
            raw = raw or {}
            return Sample(
                elapsed,
                rss,
                processes,
                total,
                raw.get("requests", 0),
                raw.get("duration_us", 0) / 1e6,
                raw.get("status_errors", 0),
                sum(raw.get(k, 0) for k in SOCKET_ERRORS),
                deliveries.worker_rss_kib() if deliveries else None,
                deliveries.pending() if deliveries else None,
            )

        samples = [sample(0.0, 0, None)]
        bench.log(
            f"soak: {', '.join(s.name for s in chosen)} in equal shares ({len(lines)} prepared "
            f"requests), {slices} x {args.sample_every} s, RSS of pid {pid} and its children"
        )
        emit(table_header(shown))
        emit(table_row(samples[0], shown))
        started = time.monotonic()
        position = total = 0
        interrupted = False
        try:
            for _ in range(slices):
                # Each wrk starts at the top of its file: rotate it to where the last slice
                # stopped, so that the replies go round every seeded request.
                start = position % len(lines)
                requests_file.write_text("".join(lines[start:] + lines[:start]))
                raw = bench.load(wrk, api.origin, requests_file, args.sample_every, args)
                elapsed = time.monotonic() - started
                if server and server.process.poll() is not None:
                    raise bench.BenchError(f"the server died:\n{server.log_tail()}")
                position += raw["requests"]
                total += raw["requests"]
                samples.append(sample(elapsed, total, raw))
                emit(table_row(samples[-1], shown))
        except KeyboardInterrupt:
            interrupted = True
            bench.log("interrupted: reporting the samples so far")
        found = verdict(samples, warm_index)
        emit("")
        delivered = None
        if deliveries:
            bench.log(f"webhooks: waiting for the last deliveries ({DRAIN_SECONDS} s at most)")
            drained = deliveries.drain(DRAIN_SECONDS)
            delivered = {
                "receiver": f"{deliveries.receiver_url}/hooks",
                "delivered_by": "supportctl worker" if deliveries.worker_pid else "the server",
                "worker_pid": deliveries.worker_pid,
                "drain_s": round(drained, 1),
                **deliveries.report(),
                "worker_verdict": verdict(samples, warm_index, worker=True),
            }
            emit(deliveries_line(delivered))
            warn_of_deliveries(delivered)
            if deliveries.worker_pid:
                emit(verdict_line(delivered["worker_verdict"], "worker"))
        emit(verdict_line(found))
        errors = sum(s.http_errors + s.socket_errors for s in samples)
        if errors:
            bench.log(f"warning: {errors} HTTP or socket errors during the soak (see the report)")
        database_after = sqlite_bytes(target.database_url), postgres_bytes(target.database_url)
        return {
            "meta": {
                "started": started_at,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": bench.shown_command(argv, "bench/soak.py"),
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "python": platform.python_version(),
                "wrk": bench.wrk_version(wrk),
                "target": "supportctl serve (started)" if server else args.url,
                "database": bench._database_kind(target.database_url),
                "workers": args.workers if server else None,
                "pid": pid,
                "minutes": args.minutes,
                "sample_every_s": args.sample_every,
                "warmup_s": args.warmup,
                "threads": min(args.threads, args.connections),
                "connections": args.connections,
                "interrupted": interrupted,
            },
            "setup": {
                "customers": len(target.who.customers),
                "requests_per_customer": args.requests,
                "hot_messages": args.hot_messages,
                "seed_seconds": round(target.seeded.seconds, 2),
                "etag": target.seeded.etag is not None,
                "rate_limited": target.seeded.rate_limited,
                "preload": target.preloaded,
                **seeded,
                "mix": [
                    {"name": s.name, "request": s.description, "expected_status": s.expected_status}
                    for s in chosen
                ],
                "prepared_requests": len(lines),
                "skipped": skipped,
                "sqlite_bytes_before": database_before[0],
                "sqlite_bytes_after": database_after[0],
                "postgres_bytes_before": database_before[1],
                "postgres_bytes_after": database_after[1],
            },
            "samples": [s.as_dict() for s in samples],
            "verdict": found,
            "webhooks": delivered,
        }
    raise AssertionError("unreachable")


def warn_of_deliveries(delivered: dict[str, Any]) -> None:
    """A warning for each way a delivery went wrong (none: every event arrived once, verified)."""
    counts, received = delivered["deliveries"], delivered["receiver"]
    problems = [f"{counts[k]:,} {k}" for k in ("pending", "failed", "retried") if counts[k]] + (
        [f"{received['unverified']:,} unverified"] if received["unverified"] else []
    )
    if received["unique"] != counts["succeeded"]:
        problems.append(
            f"{received['unique']:,} distinct events arrived for {counts['succeeded']:,} delivered"
        )
    if problems:
        bench.log(f"warning: webhook deliveries: {', '.join(problems)} (see the report)")


def slice_count(args: argparse.Namespace) -> int:
    """How many slices of --sample-every seconds make --minutes (at least one)."""
    return max(1, round(float(args.minutes) * 60 / int(args.sample_every)))


def warm_slice(args: argparse.Namespace) -> int:
    """The sample at the end of the warm-up: samples[0] is before any load, samples[k] after
    k slices."""
    return math.ceil(int(args.warmup) / int(args.sample_every))


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/soak.py",
        description=__doc__.split("\n\n")[0],
        epilog="Setup options as bench/run.py's; see bench/README.md.",
    )
    target, _, _ = bench.add_setup_arguments(parser)
    target.add_argument(
        "--pid",
        type=int,
        metavar="PID",
        help="with --url: the server's process on this machine (its RSS and its children's)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--mix",
        default=",".join(SOAK_MIX),
        metavar="LIST",
        help=f"scenarios in equal shares, of {','.join(bench.SCENARIOS)} ({','.join(SOAK_MIX)})",
    )
    load.add_argument(
        "--webhooks",
        action="store_true",
        help="with --start: deliver every event to a receiver on 127.0.0.1 (on PostgreSQL "
        "through a `supportctl worker`, whose RSS is sampled too) and count the deliveries",
    )
    load.add_argument(
        "--minutes", type=float, default=5.0, metavar="M", help="how long the soak runs (5)"
    )
    load.add_argument(
        "--sample-every",
        type=int,
        default=10,
        metavar="S",
        help="seconds of load (one wrk run) between RSS samples (10)",
    )
    load.add_argument(
        "--warmup",
        type=int,
        default=60,
        metavar="S",
        help="seconds of load before the RSS the growth is measured from (60)",
    )
    bench.add_wrk_arguments(load)
    load.add_argument(
        "--out", type=Path, metavar="FILE", help="the JSON report (./soak-<time>.json)"
    )
    args = parser.parse_args(argv)

    args.mix = [s.strip() for s in args.mix.split(",") if s.strip()]
    if unknown := [s for s in args.mix if s not in bench.SCENARIOS]:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(bench.SCENARIOS)}"
        )
    if not args.mix:
        parser.error("--mix is empty")
    if args.url and args.pid is None:
        parser.error("--url needs --pid: the server's process id here, whose memory is sampled")
    if args.start and args.pid is not None:
        parser.error("--pid is for --url; with --start the soak knows its server")
    if args.pid is not None and not Path(f"/proc/{args.pid}/status").exists():
        parser.error(f"no process {args.pid} on this machine")
    if args.webhooks and not args.start:
        parser.error("--webhooks needs --start (it registers the endpoint in the database)")
    if args.webhooks:
        # First, so that a --server-env of the same name wins.
        args.server_env = [*webhook_server_env(), *args.server_env]
    bench.check_setup_arguments(parser, args)
    bench.check_counts(
        parser,
        args,
        ("customers", "hot_messages", "threads", "connections", "workers", "sample_every"),
        ("requests", "preload", "warmup"),
    )
    if not args.minutes > 0:
        parser.error("--minutes must be more than 0")
    if warm_slice(args) >= slice_count(args):
        parser.error("--minutes must outlast --warmup by at least one --sample-every slice")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        report = soak(args, argv)
    except bench.BenchError as problem:
        bench.log(f"error: {problem}")
        return 1
    out = args.out or Path(f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    bench.log(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
