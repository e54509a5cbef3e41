"""``bench/run.py`` end to end: it starts ``supportctl serve`` on a fresh database, preloads
it, seeds through the API, loads each scenario with wrk for a second, prints the table and
writes the JSON report. Needs ``wrk`` (``apt-get install wrk``; CI installs it)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.helpers import require_tool, usage_refused

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"
PG_URL = os.environ.get("SUPPORT_TEST_PG_URL")
SCENARIO_KEYS = {"name", "request", "rps", "p50_ms", "p99_ms", "http_errors", "socket_errors"}


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not PG_URL, reason="SUPPORT_TEST_PG_URL is not set"),
            ],
        ),
    ],
)
def test_bench_runs_every_scenario_and_writes_its_report(backend: str, tmp_path: Path) -> None:
    require_tool(shutil.which("wrk") is not None, "wrk", "apt-get install wrk")
    out = tmp_path / "report.json"
    command = [sys.executable, str(BENCH), "--start", "--out", str(out), "--preload", "50"]
    command += ["--customers", "3", "--requests", "2", "--hot-messages", "3"]
    command += ["--duration", "1", "--warmup", "0", "--threads", "1", "--connections", "4"]
    if backend == "postgresql":
        assert PG_URL is not None
        server = make_url(PG_URL).set(database="postgres").render_as_string(hide_password=False)
        command += ["--pg", server, "--scenarios", "detail,list,reply"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["meta"]["database"] == backend
    assert report["meta"]["command"].startswith("python bench/run.py --start")
    assert report["setup"]["preload"]["requests"] == 50
    assert report["setup"]["preload"]["messages"] == 250
    assert report["setup"]["customers"] == 3
    names = [scenario["name"] for scenario in report["scenarios"]]
    if backend == "postgresql":
        assert names == ["detail", "list", "reply"]
    else:
        expected = ["detail", "unread", "list", "queue", "create", "reply"]
        if report["setup"]["etag"]:
            expected.insert(2, "revalidate")
        else:
            assert "revalidate" in report["setup"]["skipped"]
        assert names == expected
        assert report["setup"]["unread"]["unreadCount"] == 2
    for scenario in report["scenarios"]:
        assert scenario.keys() >= SCENARIO_KEYS
        assert scenario["requests"] > 0 and scenario["rps"] > 0
        assert 0 < scenario["p50_ms"] <= scenario["p99_ms"]
        assert scenario["http_errors"] == 0
        assert scenario["socket_errors"] == 0
    table = done.stdout.splitlines()
    assert table[0].startswith("| scenario") and "req/s" in table[0]
    assert len(table) == 2 + len(names) + len(report["setup"]["skipped"])


def test_bench_uploads_and_downloads_attachments_when_asked(tmp_path: Path) -> None:
    require_tool(shutil.which("wrk") is not None, "wrk", "apt-get install wrk")
    out = tmp_path / "report.json"
    command = [sys.executable, str(BENCH), "--start", "--out", str(out)]
    command += ["--customers", "2", "--requests", "1", "--hot-messages", "2"]
    command += ["--duration", "1", "--warmup", "0", "--threads", "1", "--connections", "2"]
    command += ["--scenarios", "detail,upload,download,download-304"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    found = {scenario["name"]: scenario for scenario in report["scenarios"]}
    assert list(found) == ["detail", "upload", "download", "download-304"]
    assert [found[name]["expected_status"] for name in found] == [200, 201, 200, 304]
    for scenario in found.values():
        assert scenario["requests"] > 0
        assert scenario["http_errors"] == 0 and scenario["socket_errors"] == 0
    # A 1 MiB PNG each way: wrk counts the upload's answers, and each download's file.
    assert found["download"]["bytes"] > found["download"]["requests"] * 1024 * 1024
    assert "-byte multipart PNG" in found["upload"]["request"]


def test_bench_refuses_preload_of_a_deployment_without_its_database(tmp_path: Path) -> None:
    refused = usage_refused(BENCH, "--url", "http://127.0.0.1:9", "--preload", "10")

    assert "--database-url" in refused


def test_the_reported_command_hides_secrets_tokens_and_passwords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run", bench)
    spec.loader.exec_module(bench)

    argv = "--url http://h:1 --secret s3cret --admin-token=TOKEN-A --customer-token TOKEN-C"
    argv += " --database-url postgresql://app:pw@db/support"
    shown = bench.shown_command(argv.split())

    assert "s3cret" not in shown and "TOKEN-" not in shown and "pw@" not in shown
    assert shown == (
        "python bench/run.py --url http://h:1 --secret '***' '--admin-token=***' "
        "--customer-token '***' --database-url 'postgresql://app:***@db/support'"
    )
