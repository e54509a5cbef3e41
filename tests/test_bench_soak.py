"""``bench/soak.py``: a few seconds of the soak end to end (it starts ``supportctl serve`` on
a fresh SQLite file, seeds, loads the mix with wrk in 1-second slices, samples the server's
RSS, writes the report), and its verdict arithmetic. The end-to-end test needs ``wrk``."""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import require_tool, usage_refused

pytestmark = pytest.mark.slow

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
SOAK = BENCH_DIR / "soak.py"
SAMPLE_KEYS = {"t_s", "rss_mib", "rss_kib", "processes", "requests", "slice_requests", "rps"}
VERDICT_KEYS = {"warm_rss_mib", "end_rss_mib", "growth_mib", "growth_percent"}


def test_soak_samples_the_server_memory_under_load_and_writes_its_report(
    tmp_path: Path,
) -> None:
    require_tool(shutil.which("wrk") is not None, "wrk", "apt-get install wrk")
    out = tmp_path / "soak.json"
    command = [sys.executable, str(SOAK), "--start", "--out", str(out)]
    command += ["--customers", "3", "--requests", "2", "--hot-messages", "3"]
    command += ["--minutes", "0.05", "--sample-every", "1", "--warmup", "1"]
    command += ["--threads", "1", "--connections", "4"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["meta"]["command"].startswith("python bench/soak.py --start")
    assert report["meta"]["database"] == "sqlite"
    assert report["meta"]["pid"] > 0
    assert [m["name"] for m in report["setup"]["mix"]] == ["detail", "list", "reply"]
    # 3 requests x 3 scenarios, interleaved: the reply scenario goes round the 6 seeded ones.
    assert report["setup"]["prepared_requests"] == 18
    samples = report["samples"]
    assert len(samples) == 4  # before the load, then after each of the 3 one-second slices
    assert samples[0]["requests"] == 0 and samples[0]["rps"] is None
    for sample in samples:
        assert sample.keys() >= SAMPLE_KEYS
        assert sample["rss_mib"] > 0 and sample["processes"] >= 1
    for before, after in itertools.pairwise(samples):
        assert after["t_s"] > before["t_s"]
        assert after["slice_requests"] > 0 and after["rps"] > 0
        assert after["requests"] == before["requests"] + after["slice_requests"]
        assert after["http_errors"] == 0 and after["socket_errors"] == 0
    verdict = report["verdict"]
    assert verdict.keys() >= VERDICT_KEYS
    assert verdict["warm_rss_mib"] == samples[1]["rss_mib"]
    assert verdict["end_rss_mib"] == samples[-1]["rss_mib"]
    assert verdict["slope_samples"] == 3
    assert verdict["result"] in ("flat", "growing")
    assert report["setup"]["sqlite_bytes_after"] > report["setup"]["sqlite_bytes_before"] > 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("|") and "RSS MiB" in lines[0] and "req/s" in lines[0]
    assert len([line for line in lines if line.startswith("|")]) == 2 + len(samples)
    assert lines[-1].startswith("verdict: ") and lines[-1].endswith(verdict["result"])


def test_soak_with_url_needs_the_server_pid() -> None:
    refused = usage_refused(SOAK, "--url", "http://127.0.0.1:9")

    assert "--pid" in refused


def _load(name: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def soak(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/soak.py as a module (it imports bench/run.py as ``run``)."""
    _load("run", BENCH_DIR / "run.py", monkeypatch)
    return _load("bench_soak", SOAK, monkeypatch)


def test_the_verdict_measures_from_the_end_of_the_warm_up(soak: ModuleType) -> None:
    def sample(t: float, mib: float) -> object:
        return soak.Sample(t, int(mib * 1024), 1, int(t * 100), 1000, 10.0, 0, 0)

    # 100 MiB idle, 150 MiB after the warm-up (ignored), then +1 MiB a minute: flat.
    rising = [sample(0, 100)] + [sample(60 * m, 150 + m) for m in range(1, 7)]
    flat = soak.verdict(rising, 1)
    assert flat["warm_rss_mib"] == 151 and flat["end_rss_mib"] == 156
    assert flat["growth_mib"] == 5 and flat["growth_percent"] == pytest.approx(3.31, abs=0.01)
    assert flat["slope_mib_per_minute"] == pytest.approx(1.0)
    assert flat["slope_samples"] == 6
    assert flat["result"] == "flat"

    growing = soak.verdict([sample(0, 100), sample(60, 100), sample(120, 105)], 1)
    assert growing["growth_percent"] == 5.0 and growing["result"] == "growing"
    assert growing["slope_mib_per_minute"] == pytest.approx(5.0)

    assert soak.verdict([sample(0, 100)], 1) is None


def test_the_rss_of_a_process_tree_counts_its_children(soak: ModuleType) -> None:
    child = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'input()'])"
    parent = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE)
    try:
        for _ in range(200):
            total, processes = soak.tree_rss_kib(parent.pid)
            if processes == 2:
                break
            time.sleep(0.05)
        assert processes == 2
        assert total > soak.vm_rss_kib(parent.pid) > 0
    finally:
        assert parent.stdin is not None
        parent.stdin.close()  # the child's input() ends, then the parent
        parent.wait(10)
