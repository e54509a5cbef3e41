"""``supportctl admin stats`` against the app served in a thread (no extra process).

Rows are seeded straight into the database with chosen times, as in ``test_stats.py``;
the command must draw the bars and print the numbers the API answers.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from support_requests.cli.main import app
from support_requests.cli.stats import BAR, BAR_WIDTH, duration
from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from tests.helpers import flat, mint
from tests.servers import app_in_thread
from tests.test_stats import Seeded, seed

FROM = datetime(2026, 11, 1)
TO = datetime(2026, 12, 1)
WINDOW = ("--from", "2026-11-01T00:00:00Z", "--to", "2026-12-01T00:00:00Z")


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    with app_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
def supportctl(api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in list(os.environ):
        if name.startswith("SUPPORT_") or name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
            monkeypatch.delenv(name)
    environment = {
        "SUPPORT_API_URL": api_url,
        "SUPPORT_CONFIG_FILE": str(tmp_path / "config.json"),
        "SUPPORT_TOKEN": mint(str(uuid.uuid4()), role="admin", name="Stats Reader"),
        "COLUMNS": "100",
    }

    def run(*args: str, **env: str) -> Result:
        result = CliRunner().invoke(app, list(args), env={**environment, **env})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    yield run


def seeded(db: sa.Engine) -> None:
    """Three requests in November and one long-open one: two answered (30 s and 2 h 5 min),
    one resolved after a day and closed, rated 5 and 4."""
    day = FROM + timedelta(days=3)
    seed(
        db,
        [
            Seeded(
                "closed",
                day,
                first_response_at=day + timedelta(seconds=30),
                last_resolved_at=day + timedelta(days=1),
                closed_at=day + timedelta(days=2),
                rating_score=5,
                rated_at=day + timedelta(days=1, hours=1),
            ),
            Seeded(
                "resolved",
                day,
                first_response_at=day + timedelta(hours=2, minutes=5),
                last_resolved_at=day + timedelta(days=3),
                rating_score=4,
                rated_at=day + timedelta(days=4),
            ),
            Seeded("in_progress", day),
            Seeded("open", datetime(2025, 1, 1)),
        ],
    )


def line_of(output: str, label: str) -> str:
    return next(line for line in output.splitlines() if label in line)


def test_stats_draws_bars_for_the_backlog_and_the_ratings(supportctl: Any, db: sa.Engine) -> None:
    seeded(db)

    result = supportctl("admin", "stats", *WINDOW)

    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    assert "3 opened" in text and "2 resolved" in text and "1 closed" in text
    # Backlog now: one open, one in progress, one resolved; equal bars.
    for label in ("open", "in progress", "resolved "):
        assert BAR * BAR_WIDTH in line_of(result.stdout, f"│ {label}"), result.stdout
    # Ratings: one 5 and one 4, full bars; none of 1 to 3.
    assert "Ratings: 2, average 4.50 of 5" in text
    for score, count in ((5, 1), (4, 1), (3, 0), (2, 0), (1, 0)):
        row = line_of(result.stdout, f"{score} ★")
        assert f" {count} " in row
        assert (BAR * BAR_WIDTH in row) == (count > 0), row


def test_stats_prints_response_and_resolution_times_with_units(
    supportctl: Any, db: sa.Engine
) -> None:
    seeded(db)

    result = supportctl("admin", "stats", *WINDOW)

    first = flat(line_of(result.stdout, "first staff response"))
    resolution = flat(line_of(result.stdout, "resolution "))
    # median of 30 s and 7500 s is 3765 s; p90 is 30 + 0.9 * 7470 = 6753 s.
    assert "1 h 2 min" in first and "1 h 52 min" in first, first
    # median of 1 d and 3 d is 2 d; p90 is 2.8 d.
    assert "2 d" in resolution and "2 d 19 h" in resolution, resolution


def test_stats_json_is_the_api_answer(supportctl: Any, db: sa.Engine) -> None:
    seeded(db)

    result = supportctl("admin", "stats", *WINDOW, "--json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["data"]["from"] == "2026-11-01T00:00:00.000Z"
    assert body["data"]["backlog"] == {"open": 1, "in_progress": 1, "resolved": 1}
    assert body["data"]["firstResponseSeconds"] == {"median": 3765.0, "p90": 6753.0}


def test_stats_of_an_empty_window_says_so(supportctl: Any) -> None:
    result = supportctl("admin", "stats")

    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    assert "0 opened" in text
    assert "Ratings: none in this window" in text
    assert BAR not in result.stdout


def test_from_after_to_is_the_api_s_422_and_exit_1(supportctl: Any) -> None:
    result = supportctl("admin", "stats", "--from", "2026-12-01", "--to", "2026-11-01")

    assert result.exit_code == 1
    assert "from: must not be after to" in flat(result.stderr)


def test_a_date_that_is_no_date_is_a_usage_error(supportctl: Any) -> None:
    result = supportctl("admin", "stats", "--from", "last tuesday")

    assert result.exit_code == 2
    assert "--from" in result.stderr


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (None, "-"),
        (0.85, "850 ms"),
        (4.5, "4.5 s"),
        (43, "43 s"),
        (303, "5 min 3 s"),
        (7500, "2 h 5 min"),
        (7200, "2 h"),
        (86400 * 3 + 3600 * 4 + 59, "3 d 4 h"),
    ],
)
def test_durations_are_said_with_units(seconds: float | None, said: str) -> None:
    assert duration(seconds) == said
