"""``supportctl db backup``: a consistent copy of a SQLite database while it is in use.

SQLite's online backup API (``sqlite3.Connection.backup``) copies every page in one step
inside one read transaction: with WAL, that is one snapshot of the database as of a
commit, while writers go on (a copy in several steps would restart whenever another
connection writes). The copy is written beside the target and renamed into place once
SQLite's ``quick_check`` passes, so a failed backup never leaves a half file under the
name asked for. PostgreSQL is backed up with ``pg_dump`` (docs/operations.md, Backups).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from support_requests.storage.database import sync_url

# What the summary counts: the tables a restore is checked by.
COUNTED = (
    "support_requests",
    "messages",
    "attachments",
    "webhook_events",
    "webhook_deliveries",
)

PG_DUMP = (
    "pg_dump --format=custom --exclude-table-data=rate_limit_counters "
    '--exclude-table-data=idempotency_records --file=support-$(date +%F).dump "$URL"'
)


class BackupRefused(ValueError):
    """A backup this command does not make; the message says what to do instead."""


def backup_sqlite(url: str, target: Path) -> dict[str, Any]:
    """Copy the SQLite database at ``url`` to ``target``; what was copied."""
    parsed = sync_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupRefused(
            f"db backup copies SQLite databases; back PostgreSQL up with pg_dump: {PG_DUMP}"
        )
    source_path = parsed.database
    if not source_path or source_path == ":memory:" or not Path(source_path).exists():
        raise BackupRefused(f"no SQLite database at {source_path or url}")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(source_path, timeout=30)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # every page in one step: one snapshot
            (verdict,) = copy.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise BackupRefused(f"the copy failed SQLite's quick_check: {verdict}")
            rows = {
                table: int(copy.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
                for table in COUNTED
            }
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            copy.close()
    finally:
        source.close()
    os.replace(partial, target)
    return {"bytes": target.stat().st_size, "rows": rows}
