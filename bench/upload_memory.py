#!/usr/bin/env python3
"""Peak memory of the server under concurrent large uploads.

    python bench/upload_memory.py                    # a fresh SQLite file
    python bench/upload_memory.py --pg postgresql://postgres@127.0.0.1:5432/postgres

It starts ``supportctl serve`` as ``bench/run.py --start`` does (it imports it: a fresh
database, a random secret, rate limits off, one worker), mints a customer's token, writes
two files of ``--size-mib`` (10) into its work directory, a PNG of RGBA noise (it does not
compress) and a UTF-8 text log, then for each kind sends ``--rounds`` (3) rounds of
``--concurrency`` (16) simultaneous uploads of it to ``POST /api/mobile/attachments``,
httpx streaming the file from disk. Meanwhile it samples the server's resident memory every
``--sample-ms`` (50): VmRSS from /proc/<pid>/status, summed over the server process and its
descendants (``bench/soak.py``'s reading). Per kind it prints the baseline (just before the
kind's first round), the peak, the peak minus the baseline, and how many uploads got 201;
it exits 0 either way (1 when it cannot run). See bench/README.md ("Upload memory").
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import run as bench
from soak import tree_rss_kib

MIB = 1024 * 1024
KINDS = ("png", "text")
CONTENT_TYPES = {"png": "image/png", "text": "text/plain"}
LOG_LINE = "2026-12-06T05:00:00.{n:06d}Z INFO sync: fetched page {n} of orders — ok ✓\n"


# -- the files -------------------------------------------------------------------------


def noisy_png_of(path: Path, limit: int) -> None:
    """The largest square PNG of RGBA noise that is at most ``limit`` bytes."""
    side = int((limit / 4) ** 0.5)
    while True:
        bench.noisy_png(path, side, side)
        if path.stat().st_size <= limit:
            return
        side -= 1


def text_log_of(path: Path, size: int) -> None:
    """A UTF-8 log of exactly ``size`` bytes (a few non-ASCII characters a line)."""
    written = 0
    with path.open("wb") as out:
        for n in range(size):
            line = LOG_LINE.format(n=n).encode()
            if written + len(line) > size:
                break
            out.write(line)
            written += len(line)
        if written < size:
            out.write(b"." * (size - written - 1) + b"\n")


# -- the sampling ----------------------------------------------------------------------


class Sampler:
    """Reads the server tree's RSS every ``every`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid = pid
        self.every = every
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, _ = tree_rss_kib(self.pid)
            self.peak_kib = max(self.peak_kib, rss)
            self.samples += 1
            self._stop.wait(self.every)

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


# -- the uploads -----------------------------------------------------------------------


@dataclass(frozen=True)
class KindResult:
    """One kind's rounds: the RSS before, at its peak and after (KiB), and the answers."""

    kind: str
    file_bytes: int
    baseline_kib: int
    peak_kib: int
    end_kib: int
    samples: int
    statuses: Counter[int]
    seconds: float

    def line(self) -> str:
        mib = 1024
        created = self.statuses.get(201, 0)
        others = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()) if s != 201)
        return (
            f"{self.kind:<5} {self.file_bytes:>12,} bytes  baseline {self.baseline_kib / mib:6.1f}"
            f" MiB  peak {self.peak_kib / mib:6.1f} MiB  peak-baseline "
            f"{(self.peak_kib - self.baseline_kib) / mib:6.1f} MiB  after "
            f"{self.end_kib / mib:6.1f} MiB  201: {created}/"
            f"{sum(self.statuses.values())}{f' ({others})' if others else ''}  "
            f"{self.seconds:.1f} s, {self.samples} samples"
        )


def upload(client: httpx.Client, token: str, path: Path, content_type: str) -> int:
    """One upload of ``path``, streamed from disk; its status (0 if the connection failed)."""
    with path.open("rb") as file:
        try:
            response = client.post(
                bench.ATTACHMENTS,
                headers={"Authorization": f"Bearer {token}"},
                files={"file": (path.name, file, content_type)},
            )
        except httpx.TransportError as problem:
            bench.log(f"upload failed: {problem!r}")
            return 0
    return response.status_code


def run_kind(
    kind: str, path: Path, pid: int, base_url: str, token: str, args: argparse.Namespace
) -> KindResult:
    """``args.rounds`` rounds of ``args.concurrency`` simultaneous uploads of ``path``."""
    baseline, _ = tree_rss_kib(pid)
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    limits = httpx.Limits(max_connections=args.concurrency)
    with (
        httpx.Client(base_url=base_url, timeout=120, limits=limits) as client,
        ThreadPoolExecutor(max_workers=args.concurrency) as pool,
        Sampler(pid, args.sample_ms / 1000).running() as sampler,
    ):

        def one(_: int) -> int:
            return upload(client, token, path, CONTENT_TYPES[kind])

        for round_no in range(args.rounds):
            done = list(pool.map(one, range(args.concurrency)))
            statuses.update(done)
            bench.log(f"{kind} round {round_no + 1}: {Counter(done)}")
    return KindResult(
        kind,
        path.stat().st_size,
        baseline,
        max(sampler.peak_kib, baseline),
        tree_rss_kib(pid)[0],
        sampler.samples,
        statuses,
        time.monotonic() - started,
    )


# -- main ------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> None:
    """Make the files and a fresh database; upload each kind to a server of its own (so
    that one kind's baseline is not what the other left on the server's heap)."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="support-upmem-")))
        if args.pg:
            database_url = stack.enter_context(bench.fresh_postgres(args.pg))
        else:
            database_url = f"sqlite:///{workdir / 'support.db'}"
        secret = secrets.token_urlsafe(48)
        env = bench.server_environment(database_url, workdir, secret)
        bench.initialise_database(env)
        token = bench.Minter(secret).token(f"bench-{uuid.uuid4().hex[:8]}", "Bench Uploader")
        limit = int(args.size_mib * MIB)
        files = {"png": workdir / "noise.png", "text": workdir / "app.log"}
        noisy_png_of(files["png"], limit)
        text_log_of(files["text"], limit)
        for kind in args.kinds:
            with bench.started_server(env, workdir, 1) as server:
                pid = server.process.pid
                result = run_kind(kind, files[kind], pid, server.base_url, token, args)
                if server.process.poll() is not None:
                    raise bench.BenchError(f"the server died during {kind}:\n{server.log_tail()}")
            print(result.line(), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/upload_memory.py",
        description=__doc__.split("\n\n")[0],
        epilog="See bench/README.md (Upload memory).",
    )
    parser.add_argument(
        "--pg", metavar="URL", help="a fresh PostgreSQL database bench_* on this server"
    )
    parser.add_argument(
        "--size-mib", type=float, default=10.0, metavar="M", help="each file's size (10)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, metavar="N", help="uploads at once (16)"
    )
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds per kind (3)")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), metavar="LIST", help=f"of {','.join(KINDS)} (both)"
    )
    parser.add_argument(
        "--sample-ms", type=int, default=50, metavar="MS", help="RSS sampling period (50)"
    )
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kinds or any(k not in KINDS for k in args.kinds):
        parser.error(f"--kinds: some of {', '.join(KINDS)}")
    for name in ("concurrency", "rounds", "sample_ms"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.size_mib <= 0:
        parser.error("--size-mib must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        measure(args)
    except bench.BenchError as problem:
        bench.log(f"error: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
