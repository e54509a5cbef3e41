"""supportctl db backup: a consistent copy of SQLite while the server writes, and the
pg_dump recipe for PostgreSQL."""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
import threading
from pathlib import Path

import httpx
from PIL import Image

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.storage import schema
from tests.helpers import ADMIN, MOBILE, SECRET, admin, customer, loopback_lookup
from tests.servers import app_in_thread, migrated_database


def _png() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 220)).save(image, format="PNG")
    return image.getvalue()


def _write_load(url: str, stop: threading.Event, written: list[int]) -> None:
    """Creates with an attachment, customer and staff replies, until ``stop``."""
    alice, staff = customer(), admin()
    picture = _png()
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            upload = client.post(
                "/api/mobile/attachments", files={"file": ("s.png", picture)}, headers=alice
            )
            assert upload.status_code == 201, upload.text
            body = {
                "category": "technical",
                "subject": "Backed up",
                "message": "Under load.",
                "attachments": [upload.json()["data"]["id"]],
            }
            created = client.post(MOBILE, json=body, headers=alice)
            assert created.status_code == 201, created.text
            request_id = created.json()["data"]["id"]
            for path, headers in ((MOBILE, alice), (ADMIN, staff)):
                reply = client.post(
                    f"{path}/{request_id}/messages", json={"body": "more"}, headers=headers
                )
                assert reply.status_code == 201, reply.text
            written.append(request_id)


def _consistency(path: Path) -> dict[str, int]:
    """Every cross-table fact a restore must hold; the row counts."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        # Each request's denormalised counts equal its rows.
        assert (
            db.execute(
                "SELECT count(*) FROM support_requests r WHERE r.attachment_count != "
                "(SELECT count(*) FROM attachments a WHERE a.request_id = r.id)"
            ).fetchone()[0]
            == 0
        )
        assert (
            db.execute(
                "SELECT count(*) FROM support_requests r WHERE NOT EXISTS "
                "(SELECT 1 FROM messages m WHERE m.request_id = r.id)"
            ).fetchone()[0]
            == 0
        )
        # Every stored attachment has all its bytes.
        assert (
            db.execute(
                "SELECT count(*) FROM attachments a WHERE a.removed_at IS NULL AND a.size != "
                "(SELECT coalesce(sum(length(c.data)), 0) FROM attachment_chunks c "
                "WHERE c.attachment_id = a.id)"
            ).fetchone()[0]
            == 0
        )
        # The badge equals the sum of the unread counts.
        assert (
            db.execute(
                "SELECT count(*) FROM customer_inboxes i WHERE i.unread_count != "
                "(SELECT coalesce(sum(r.unread_count), 0) FROM support_requests r "
                "WHERE r.customer_id = i.customer_id)"
            ).fetchone()[0]
            == 0
        )
        # Every delivery's event is there, and every event has its deliveries.
        assert (
            db.execute(
                "SELECT count(*) FROM webhook_events e WHERE NOT EXISTS "
                "(SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)"
            ).fetchone()[0]
            == 0
        )
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("support_requests", "messages", "webhook_deliveries")
        }
        # An upload committed just before the snapshot may wait for its create: unattached.
        counts["attached"] = db.execute(
            "SELECT count(*) FROM attachments WHERE message_id IS NOT NULL"
        ).fetchone()[0]
        return counts


def test_a_sqlite_backup_taken_under_write_load_restores_consistent(run, tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    migrated_database(url)
    settings = Settings(
        database_url=url,
        jwt_secret=SECRET.encode(),
        webhook_allow_private=True,
        webhook_allow_http=True,
        rate_limit_writes="off",
    )
    app = create_app(settings, lookup=loopback_lookup)
    stop, written = threading.Event(), []
    backup = tmp_path / "backup.db"
    with app_in_thread(app) as server:
        hook = httpx.post(
            f"{server}/api/admin/webhooks",
            json={"url": "http://127.0.0.1:9/hooks", "events": ["support_request.created"]},
            headers=admin(),
        )
        assert hook.status_code == 201, hook.text
        load = threading.Thread(target=_write_load, args=(server, stop, written))
        load.start()
        try:
            while len(written) < 5:
                assert load.is_alive()
                stop.wait(0.05)
            result = run("db", "backup", str(backup), "--json", SUPPORT_DATABASE_URL=url)
            taken_at = len(written)
            while len(written) < taken_at + 3:  # the server kept writing meanwhile
                assert load.is_alive()
                stop.wait(0.05)
        finally:
            stop.set()
            load.join()
    assert result.exit_code == 0, result.output
    copied = json.loads(result.output)
    counts = _consistency(backup)
    assert copied["rows"]["support_requests"] == counts["support_requests"] >= 5
    assert counts["attached"] == counts["support_requests"]
    # One writer: only the newest request may still lack its replies in the snapshot.
    assert (
        3 * counts["support_requests"] - 2 <= counts["messages"] <= 3 * counts["support_requests"]
    )
    assert counts["webhook_deliveries"] == counts["support_requests"]
    assert counts["support_requests"] < len(written)  # a snapshot, not the end state
    # The copy is a database the service runs on, at the newest revision.
    restored = f"sqlite:///{backup}"
    assert schema.current(restored) == schema.head()
    alice_view = create_app(dataclasses.replace(settings, database_url=restored))
    with alice_view.test_client() as client:
        queue = client.get(ADMIN, headers=admin())
    assert queue.status_code == 200
    assert queue.json()["data"]


def test_backup_refuses_to_overwrite_unless_forced(run, tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    migrated_database(url)
    backup = tmp_path / "backup.db"
    backup.write_bytes(b"precious")
    refused = run("db", "backup", str(backup), SUPPORT_DATABASE_URL=url)
    assert refused.exit_code == 1
    assert "--force" in refused.output
    assert backup.read_bytes() == b"precious"
    forced = run("db", "backup", str(backup), "--force", SUPPORT_DATABASE_URL=url)
    assert forced.exit_code == 0, forced.output
    assert schema.current(f"sqlite:///{backup}") == schema.head()
    assert not list(tmp_path.glob(".*.partial"))


def test_postgresql_backups_are_pg_dumps(run, tmp_path):
    result = run(
        "db",
        "backup",
        str(tmp_path / "x.db"),
        SUPPORT_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/anything",
    )
    assert result.exit_code == 1
    assert "pg_dump" in result.output
    assert not (tmp_path / "x.db").exists()
