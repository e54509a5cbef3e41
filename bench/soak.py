#!/usr/bin/env python3
"""Soak a support-requests deployment: minutes of steady mixed load, its memory sampled.

    python bench/soak.py --start                      # 5 minutes on a fresh SQLite file
    python bench/soak.py --start --pg postgresql://postgres@127.0.0.1:5432/postgres
    SUPPORT_JWT_SECRET=... python bench/soak.py --url http://127.0.0.1:8080 --pid 4242

It sets up and seeds exactly as ``bench/run.py`` does (it imports it: --start, --pg, --url,
tokens, --preload, the seeding through the API), then runs wrk with ``bench/lua/requests.lua``
in slices of ``--sample-every`` seconds (10) for ``--minutes`` (5), over one file of prepared
requests that mixes run.py's scenarios (``--mix``, by default detail, list and reply, in equal
shares). After each slice it reads the resident memory of the server: VmRSS from
/proc/<pid>/status, summed over the server process and all its descendants (the workers of
``--workers N``). It prints a row per sample, then a verdict: RSS at the end of the warm-up
(``--warmup``, 60 s), RSS at the end, the growth in between, and the least-squares slope in
MiB/minute over the samples from the end of the warm-up on; "flat" when the growth is under
5%, "growing" otherwise. It measures, it does not judge: it exits 0 either way.

The database grows during the soak (each reply adds a message to one of the seeded requests;
the hot request the detail reads is never replied to, so the detail stays the same size), and
only the server's RSS is measured: not the database server's, not wrk's.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import run as bench

SOAK_MIX = ("detail", "list", "reply")
FLAT_BELOW_PERCENT = 5.0


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


def tree_rss_kib(pid: int) -> tuple[int, int]:
    """VmRSS summed over ``pid`` and all its descendants (KiB), and how many they are."""
    if vm_rss_kib(pid) is None:
        raise bench.BenchError(f"the server process {pid} is gone")
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
    """The server's RSS after one slice of load, and wrk's numbers for that slice."""

    t_s: float
    rss_kib: int
    processes: int
    requests: int
    slice_requests: int
    slice_s: float
    http_errors: int
    socket_errors: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def rps(self) -> float | None:
        return self.slice_requests / self.slice_s if self.slice_s else None

    def as_dict(self) -> dict[str, Any]:
        rps = self.rps
        return {
            **asdict(self),
            "t_s": round(self.t_s, 2),
            "slice_s": round(self.slice_s, 3),
            "rss_mib": round(self.rss_mib, 2),
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


def verdict(samples: list[Sample], warm_index: int) -> dict[str, Any] | None:
    """RSS at the end of the warm-up (``samples[warm_index]``) against the last sample, and
    the slope from the warm-up on; None when the samples stop before the warm-up ends."""
    if warm_index >= len(samples):
        return None
    warm, end = samples[warm_index], samples[-1]
    growth = end.rss_mib - warm.rss_mib
    percent = 100 * growth / warm.rss_mib
    slope = slope_per_minute([(s.t_s, s.rss_mib) for s in samples[warm_index:]])
    return {
        "warm_t_s": round(warm.t_s, 2),
        "warm_rss_mib": round(warm.rss_mib, 2),
        "end_t_s": round(end.t_s, 2),
        "end_rss_mib": round(end.rss_mib, 2),
        "growth_mib": round(growth, 2),
        "growth_percent": round(percent, 2),
        "slope_mib_per_minute": None if slope is None else round(slope, 3),
        "slope_samples": len(samples) - warm_index,
        "flat_below_percent": FLAT_BELOW_PERCENT,
        "result": "flat" if percent < FLAT_BELOW_PERCENT else "growing",
    }


# -- output ----------------------------------------------------------------------------

COLUMNS = (("time", 6), ("RSS MiB", 8), ("requests", 10), ("req/s", 7), ("errors", 6))


def clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def table_header() -> str:
    rule = "|" + "|".join("-" * (w + 1) + ":" for _, w in COLUMNS) + "|"
    return "| " + " | ".join(n.rjust(w) for n, w in COLUMNS) + " |\n" + rule


def table_row(sample: Sample) -> str:
    rps = sample.rps
    cells = (
        clock(sample.t_s),
        f"{sample.rss_mib:.1f}",
        f"{sample.requests:,}",
        "-" if rps is None else f"{rps:,.0f}",
        str(sample.http_errors + sample.socket_errors),
    )
    return "| " + " | ".join(c.rjust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)) + " |"


def verdict_line(found: dict[str, Any] | None) -> str:
    if found is None:
        return "verdict: none, the soak stopped before the end of the warm-up"
    slope = found["slope_mib_per_minute"]
    return (
        f"verdict: RSS {found['warm_rss_mib']:.1f} MiB after the warm-up "
        f"({clock(found['warm_t_s'])}), {found['end_rss_mib']:.1f} MiB at the end "
        f"({clock(found['end_t_s'])}): {found['growth_mib']:+.1f} MiB "
        f"({found['growth_percent']:+.1f}%), slope "
        + ("n/a" if slope is None else f"{slope:+.2f} MiB/min")
        + f" over {found['slope_samples']} samples: {found['result']}"
    )


def emit(line: str) -> None:
    print(line, flush=True)


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


def soak(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Set up as bench/run.py does, load the mix slice by slice, sample the server's RSS."""
    wrk = bench.ensure_wrk()
    run_id = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    slices = slice_count(args)
    warm_index = warm_slice(args)
    with bench.deployment(args, run_id) as target:
        server, api = target.server, target.api
        pid = server.process.pid if server else args.pid
        available, skipped = bench.scenarios(target.who, target.seeded)
        chosen = [s for s in available if s.name in args.mix]
        for name in args.mix:
            if name in skipped:
                bench.log(f"warning: {name} left out of the mix: {skipped[name]}")
        if not chosen:
            raise bench.BenchError("nothing left to load in --mix")
        for scenario in chosen:
            bench.check_scenario(api, scenario)
        lines = [call.line(api.prefix) + "\n" for call in mixed_calls(chosen)]
        requests_file = target.workdir / "soak.tsv"
        database_before = sqlite_bytes(target.database_url)

        rss, processes = tree_rss_kib(pid)
        samples = [Sample(0.0, rss, processes, 0, 0, 0.0, 0, 0)]
        bench.log(
            f"soak: {', '.join(s.name for s in chosen)} in equal shares ({len(lines)} prepared "
            f"requests), {slices} x {args.sample_every} s, RSS of pid {pid} and its children"
        )
        emit(table_header())
        emit(table_row(samples[0]))
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
                rss, processes = tree_rss_kib(pid)
                position += raw["requests"]
                total += raw["requests"]
                socket_errors = sum(
                    raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
                )
                sample = Sample(
                    elapsed,
                    rss,
                    processes,
                    total,
                    raw["requests"],
                    raw["duration_us"] / 1e6,
                    raw["status_errors"],
                    socket_errors,
                )
                samples.append(sample)
                emit(table_row(sample))
        except KeyboardInterrupt:
            interrupted = True
            bench.log("interrupted: reporting the samples so far")
        found = verdict(samples, warm_index)
        emit("")
        emit(verdict_line(found))
        errors = sum(s.http_errors + s.socket_errors for s in samples)
        if errors:
            bench.log(f"warning: {errors} HTTP or socket errors during the soak (see the report)")
        database_after = sqlite_bytes(target.database_url)
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
                "mix": [
                    {"name": s.name, "request": s.description, "expected_status": s.expected_status}
                    for s in chosen
                ],
                "prepared_requests": len(lines),
                "skipped": {k: v for k, v in skipped.items() if k in args.mix},
                "sqlite_bytes_before": database_before,
                "sqlite_bytes_after": database_after,
            },
            "samples": [s.as_dict() for s in samples],
            "verdict": found,
        }
    raise AssertionError("unreachable")


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
        help=f"scenarios in equal shares, of {','.join(bench.DEFAULT_SCENARIOS)} "
        f"({','.join(SOAK_MIX)})",
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
    if unknown := [s for s in args.mix if s not in bench.DEFAULT_SCENARIOS]:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(bench.DEFAULT_SCENARIOS)}"
        )
    if not args.mix:
        parser.error("--mix is empty")
    if args.url and args.pid is None:
        parser.error("--url needs --pid: the server's process id here, whose memory is sampled")
    if args.start and args.pid is not None:
        parser.error("--pid is for --url; with --start the soak knows its server")
    if args.pid is not None and not Path(f"/proc/{args.pid}/status").exists():
        parser.error(f"no process {args.pid} on this machine")
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
