"""``bench/webhooks.py`` end to end, small: a fresh PostgreSQL database, a backlog delivered
by 1 and 3 workers, the lag at a steady rate, and the API under wrk without and with a
worker; it prints and writes its JSON report. Needs PostgreSQL and ``wrk``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL
from tests.helpers import require_tool, usage_refused

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="SUPPORT_TEST_PG_URL is not set"),
]

BENCH = Path(__file__).resolve().parent.parent / "bench" / "webhooks.py"


def _server() -> str:
    """The test PostgreSQL server (its ``postgres`` database): the bench makes its own."""
    assert PG_URL is not None
    return make_url(PG_URL).set(database="postgres").render_as_string(hide_password=False)


def test_the_webhook_bench_measures_delivery_lag_and_the_api_cost(tmp_path: Path) -> None:
    require_tool(shutil.which("wrk") is not None, "wrk", "apt-get install wrk")
    server = _server()
    out = tmp_path / "report.json"
    command = [sys.executable, str(BENCH), "--pg", server, "--out", str(out)]
    command += ["--events", "60", "--requests", "12", "--rate", "20", "--lag-seconds", "2"]
    command += ["--api-seconds", "1", "--customers", "3", "--api-requests", "2"]
    command += ["--connections", "4", "--api-pairs", "3"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [run["workers"] for run in report["delivery"]] == [1, 3]
    for run in report["delivery"]:
        assert run["unique"] == run["arrivals"] == 60
        assert run["unverified"] == 0
        assert run["events_per_s"] > 0
        assert run["worker_cpu_ms_per_event"] > 0
    lag = report["lag"]
    assert lag["events"] >= 30
    assert 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"]
    phases = report["api"]["phases"]
    assert [phase["phase"] for phase in phases] == ["without", *["with", "without"] * 3]
    for phase in phases:
        assert phase["create_rps"] > 0 and phase["reply_rps"] > 0
        assert phase["postgres_cpu_ms_per_request"] > 0
        assert (phase["worker_cpu_seconds"] > 0) == (phase["phase"] == "with")
        # The workers' backends are told apart by their application_name.
        assert (phase["worker_backends_cpu_seconds"] > 0) == (phase["phase"] == "with")
    assert set(report["api"]["cost_percent"]) == {"create", "reply"}
    for name, each in report["api"]["cost_percent_each"].items():
        # The mean of each run's cost (against the runs either side of it).
        assert len(each) == 3
        assert abs(sum(each) / 3 - report["api"]["cost_percent"][name]) <= 0.1
    assert json.loads(done.stdout) == report


def test_the_api_cost_takes_at_least_one_run_with_a_worker() -> None:
    refused = usage_refused(BENCH, "--pg", "postgresql://127.0.0.1/x", "--api-pairs", "0")

    assert "--api-pairs and --notify-pairs must be at least 1" in refused


def test_the_notify_part_measures_each_transaction_with_and_without_a_listener(
    tmp_path: Path,
) -> None:
    server = _server()
    out = tmp_path / "report.json"
    command = [sys.executable, str(BENCH), "--pg", server, "--out", str(out), "--parts", "notify"]
    command += ["--notify-seconds", "0.5", "--notify-pairs", "2"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report) == {"meta", "notify"}
    runs = report["notify"]["runs"]
    assert [run["phase"] for run in runs] == ["without", "with", "without", "with", "without"]
    assert all(run["transactions"] > 0 and run["cpu_ms"] > 0 for run in runs)
    assert report["notify"]["with_over_without"] > 0


def test_postgres_is_pinned_only_beside_the_pinned_server() -> None:
    refused = usage_refused(BENCH, "--pg", "postgresql://127.0.0.1/x", "--pin-postgres")

    assert "--pin-postgres goes with --pin" in refused
