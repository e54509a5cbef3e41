"""``bench/upload_memory.py`` end to end, small: it starts ``supportctl serve``, uploads a
noisy PNG and a text log a few at a time, and prints the server's RSS for each kind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "upload_memory.py"
LINE = re.compile(
    r"^(?P<kind>png|text) +(?P<bytes>[\d,]+) bytes +baseline +(?P<baseline>[\d.]+) MiB +"
    r"peak +(?P<peak>[\d.]+) MiB +peak-baseline +-?[\d.]+ MiB +after +[\d.]+ MiB +"
    r"201: (?P<created>\d+)/(?P<sent>\d+) ",
    re.MULTILINE,
)


def test_upload_memory_reports_each_kind_and_every_upload_is_created() -> None:
    command = [sys.executable, str(SCRIPT), "--size-mib", "1", "--concurrency", "4"]
    command += ["--rounds", "1", "--sample-ms", "20"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    found = {m["kind"]: m for m in LINE.finditer(done.stdout)}
    assert list(found) == ["png", "text"], done.stdout
    for kind in found.values():
        assert (kind["created"], kind["sent"]) == ("4", "4")
        assert 0 < float(kind["baseline"]) <= float(kind["peak"])
    assert int(found["text"]["bytes"].replace(",", "")) == 1024 * 1024
    assert 0 < int(found["png"]["bytes"].replace(",", "")) <= 1024 * 1024
