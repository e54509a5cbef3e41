"""``supportctl customers export`` and ``erase``: local commands on the server's database."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.storage.customers import ERASED, EXPORT_FORMAT
from tests.helpers import ADMIN, admin, flat, known_admin
from tests.test_erasure import (
    Customer,
    customer_with_everything,
    everything_of,
    request_messages,
    rows,
)


@pytest.fixture
def alex(client: Any, db: sa.Engine, database_url: str) -> Iterator[Customer]:
    yield customer_with_everything(client, db, database_url, known_admin(client))


def test_export_is_json_with_every_request_message_attachment_and_device(
    run: Any, database_url: str, db: sa.Engine, alex: Customer
) -> None:
    result = run("customers", "export", alex.sub, "--database-url", database_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('{\n  "format"')  # for people: indented
    document = json.loads(result.stdout)
    assert json.loads(json.dumps(document)) == document
    assert (document["format"], document["customerId"]) == (EXPORT_FORMAT, alex.sub)
    assert [r["id"] for r in document["requests"]] == alex.requests
    first = document["requests"][0]
    assert (first["subject"], first["category"], first["status"]) == (
        "Card 4111 declined",
        "technical",
        "resolved",
    )
    assert first["customerName"] == "Alex Example"
    assert first["device"]["model"] == "iPhone15,3"
    assert (first["rating"]["score"], first["rating"]["comment"]) == (2, "Alex was not happy")
    stored = request_messages(db, alex.requests)
    exported = [m for r in document["requests"] for m in r["messages"]]
    assert [(m["id"], m["body"], m["internal"], m["authorType"]) for m in exported] == [
        (m["id"], m["body"], m["internal"], m["author_type"]) for m in stored
    ]
    assert any(m["internal"] for m in exported)
    files = [a for m in exported for a in m["attachments"]]
    assert [(a["id"], a["fileName"], a["removed"]) for a in files] == [
        (alex.attachments[0], "my-card.png", False),
        (alex.attachments[1], "refund-for-alex.pdf", False),
    ]
    assert (files[0]["contentType"], files[0]["width"], files[0]["height"]) == (
        "image/png",
        640,
        480,
    )
    assert [(u["id"], u["fileName"]) for u in document["uploads"]] == [
        (alex.uploads[0], "passport-alex.pdf")
    ]
    assert [(d["platform"], d["token"]) for d in document["devices"]] == [
        ("ios", f"apns-{alex.sub}")
    ]


def test_export_to_a_file_writes_the_same_document(
    run: Any, database_url: str, alex: Customer, tmp_path: Path
) -> None:
    target = tmp_path / "alex.json"
    result = run("customers", "export", alex.sub, "-o", str(target), "--database-url", database_url)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert json.loads(target.read_text(encoding="utf-8"))["customerId"] == alex.sub


def test_export_and_erase_of_an_unknown_customer_exit_1(run: Any, database_url: str) -> None:
    for command in (["export"], ["erase", "--yes"]):
        result = run("customers", *command, "nobody", "--database-url", database_url)
        assert result.exit_code == 1
        assert "holds no data about customer 'nobody'" in flat(result.output)


def test_erase_asks_first_and_answering_no_erases_nothing_and_exits_1(
    run: Any, database_url: str, db: sa.Engine, alex: Customer
) -> None:
    before = everything_of(db, alex)
    result = run_with_input(
        run, "n\n", "customers", "erase", alex.sub, "--database-url", database_url
    )
    assert result.exit_code == 1
    shown = flat(result.output)
    assert "2 requests (5 messages, 2 attachments), 1 upload not attached, 1 device" in shown
    assert "Nothing was erased." in shown
    assert everything_of(db, alex) == before


def run_with_input(run: Any, answer: str, *args: str) -> Any:
    """``run`` with ``answer`` typed at the prompt."""
    from typer.testing import CliRunner

    from support_requests.cli.main import app

    del run  # its environment (no SUPPORT_* but the data dir) is already set
    result = CliRunner().invoke(app, list(args), input=answer)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_erase_asks_first_and_answering_yes_erases(
    run: Any, database_url: str, db: sa.Engine, alex: Customer
) -> None:
    result = run_with_input(
        run, "y\n", "customers", "erase", alex.sub, "--database-url", database_url
    )
    assert result.exit_code == 0, result.output
    assert f"Erased customer '{alex.sub}': 2 requests, 5 messages" in flat(result.output)
    assert {m["body"] for m in request_messages(db, alex.requests)} == {ERASED}


def test_erase_yes_json_erases_without_asking_and_records_supportctl_in_the_history(
    client: Any, run: Any, database_url: str, db: sa.Engine, alex: Customer
) -> None:
    result = run("customers", "erase", alex.sub, "--yes", "--json", "--database-url", database_url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: v for k, v in data.items() if k != "erasedAt"} == {
        "customerId": alex.sub,
        "requests": 2,
        "messages": 5,
        "attachments": 3,
        "devices": 1,
    }
    after = everything_of(db, alex)
    assert (after["devices"], after["chunks"], after["webhook_events"]) == ([], [], [])
    assert {s["subject"] for s in after["requests"]} == {ERASED}
    history = client.get(f"{ADMIN}/{alex.requests[0]}/events", headers=admin()).json()["data"]
    assert (history[-1]["type"], history[-1]["actor"], history[-1]["at"]) == (
        "erased",
        {"type": "admin", "id": "supportctl"},
        data["erasedAt"],
    )
    again = run("customers", "erase", alex.sub, "--yes", "--json", "--database-url", database_url)
    assert json.loads(again.stdout)["requests"] == 0
    exported = json.loads(
        run("customers", "export", alex.sub, "--database-url", database_url).stdout
    )
    assert {m["body"] for r in exported["requests"] for m in r["messages"]} == {ERASED}
    assert exported["devices"] == []


def test_erase_deletes_the_files_in_support_attachment_dir(
    run: Any, settings: Settings, database_url: str, db: sa.Engine, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    with create_app(dataclasses.replace(settings, attachment_dir=files)).test_client() as client:
        alex = customer_with_everything(client, db, database_url, known_admin(client))
    assert len(list(files.iterdir())) == 3
    result = run(
        "customers",
        "erase",
        alex.sub,
        "--yes",
        "--database-url",
        database_url,
        SUPPORT_ATTACHMENT_DIR=str(files),
    )
    assert result.exit_code == 0, result.output
    assert list(files.iterdir()) == []
    assert all(r["storage_path"] is None for r in rows(db, "attachments"))
