"""``supportctl mobile rate`` and ``supportctl admin note``, against a running ``supportctl
serve`` (SQLite, and PostgreSQL when configured), in the style of ``test_cli.py`` whose
server and runner these tests share."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.test_cli import Cli, cli, new_request, server, someone  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def resolved(cli: Cli, customer: str, agent: str) -> str:  # noqa: F811
    request_id = str(new_request(cli, customer)["id"])
    done = cli("--as-admin", agent, "admin", "resolve", request_id, "--note", "Fixed in 4.2.1.")
    assert done.exit_code == 0, done.output
    return request_id


def test_mobile_rate_shows_the_stars_and_show_hints_rate_while_allowed(cli: Cli) -> None:  # noqa: F811
    customer, agent = someone(), f"Agent {uuid.uuid4().hex[:6]}"
    request_id = resolved(cli, customer, agent)

    before = cli("--as", customer, "mobile", "show", request_id, NO_COLOR="1")
    rated = cli("--as", customer, "mobile", "rate", request_id, "--score", "4",
                "--comment", "Quick and kind.", NO_COLOR="1")  # fmt: skip

    assert before.exit_code == 0, before.output
    assert f"supportctl mobile rate {request_id} --score 1-5" in before.stdout
    assert re.search(r"Allowed actions\s+reply, rate", before.stdout)
    assert rated.exit_code == 0, rated.output
    assert "Support request rated successfully" in rated.stdout
    assert re.search(r"Rating\s+★★★★☆ 4/5\s+Quick and kind\.", rated.stdout)
    data = cli.json("--as", customer, "mobile", "show", request_id)["data"]
    assert (data["rating"]["score"], data["rating"]["comment"]) == (4, "Quick and kind.")
    shown = cli("--as-admin", agent, "admin", "show", request_id, NO_COLOR="1")
    assert re.search(r"Rating\s+★★★★☆ 4/5", shown.stdout)
    assert "score: - → 4" in shown.stdout  # the history's rated entry


def test_mobile_rate_of_an_open_request_prints_the_refusal_and_exits_1(cli: Cli) -> None:  # noqa: F811
    customer = someone()
    request_id = str(new_request(cli, customer)["id"])

    refused = cli("--as", customer, "mobile", "rate", request_id, "--score", "5")

    assert refused.exit_code == 1
    assert "can be rated once it is resolved or closed" in refused.output
    assert cli.json("--as", customer, "mobile", "show", request_id)["data"]["rating"] is None


@pytest.mark.parametrize("score", ["0", "6", "five"])
def test_mobile_rate_with_a_score_out_of_1_to_5_is_a_usage_error(cli: Cli, score: str) -> None:  # noqa: F811
    result = cli("--as", someone(), "mobile", "rate", "1", "--score", score)

    assert result.exit_code == 2
    assert "--score" in result.output


def test_admin_note_is_shown_apart_from_public_messages_and_never_to_the_customer(
    cli: Cli,  # noqa: F811
) -> None:
    customer, agent = someone(), f"Agent {uuid.uuid4().hex[:6]}"
    request_id = str(new_request(cli, customer, message="Customer words")["id"])
    cli("--as-admin", agent, "admin", "reply", request_id, "--body", "Public words")

    noted = cli("--as-admin", agent, "admin", "note", request_id, "--body", "Secret words",
                "--json")  # fmt: skip

    assert noted.exit_code == 0, noted.output
    note = json.loads(noted.stdout)["data"]["messages"][-1]
    assert (note["body"], note["internal"]) == ("Secret words", True)
    shown = cli("--as-admin", agent, "admin", "show", request_id, NO_COLOR="1").stdout
    lines = shown.splitlines()
    public_line = next(line for line in lines if "Public words" in line)
    note_line = next(line for line in lines if "Secret words" in line)
    assert public_line.rstrip().endswith("┃")  # staff's heavy box
    assert note_line.rstrip().endswith("║")  # a note's double box
    assert f"internal note · {agent} (staff), you" in shown
    assert "internal note added" in shown  # the history's entry
    mobile = cli("--as", customer, "mobile", "show", request_id, NO_COLOR="1").stdout
    assert "Public words" in mobile
    assert "Secret words" not in mobile
    assert "internal" not in mobile
