"""Schema versions through Alembic: upgrade, downgrade, current, and the start-up check."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect

from support_requests.storage.database import sync_url

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "supportctl db upgrade"


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this version of the service needs."""


class SchemaNewerThanService(SchemaOutOfDate):
    """The database was migrated by a newer version of the service: a revision this version
    does not know. Only upgrading the service (or that version's ``db downgrade``) helps."""


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the database at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sync_url(url).render_as_string(hide_password=False))
    return config


def head() -> str:
    """The newest revision this version of the service knows."""
    revision = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert revision is not None
    return revision


@cache
def known_revisions() -> frozenset[str]:
    """Every revision this version's migrations define."""
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return frozenset(script.revision for script in scripts.walk_revisions())


def mismatch(at: str | None, needed: str) -> str:
    """What to do when the database is at revision ``at`` and this version needs ``needed``:
    upgrade the database when it is behind, upgrade the service when the database is ahead
    (a revision this version does not know was written by a newer one)."""
    if at is not None and at not in known_revisions():
        return (
            f"The database schema is at {at}, newer than this version of the service knows "
            f"(its newest is {needed}): the database was migrated by a newer version. "
            "Upgrade the service to that version; do not run `supportctl db` commands "
            "of this one on it."
        )
    return (
        f"The database schema is at {at or 'no revision'}, this version needs {needed}: "
        f"run `{UPGRADE_COMMAND}` (with the same SUPPORT_DATABASE_URL) first."
    )


def _refuse_a_newer_schema(url: str) -> None:
    at = current(url)
    if at is not None and at not in known_revisions():
        raise SchemaNewerThanService(mismatch(at, head()))


def _engine(url: str) -> Engine:
    target = sync_url(url)
    if target.get_backend_name() == "sqlite" and target.database not in (None, "", ":memory:"):
        Path(str(target.database)).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(target)


def current(url: str) -> str | None:
    """The revision the database is at (None when it was never migrated)."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (refused on a schema newer than this version)."""
    _refuse_a_newer_schema(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` drops every table; refused on a
    schema newer than this version: only the version that wrote it can take it down)."""
    _refuse_a_newer_schema(url)
    if revision != "base" and current(url) is None:
        raise ValueError("The database is at no revision: there is nothing to downgrade.")
    command.downgrade(alembic_config(url), revision)


def is_empty(url: str) -> bool:
    """Whether the database has none of the service's tables (Alembic's own aside)."""
    engine = _engine(url)
    try:
        return not set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def ensure_current(url: str, *, initialise_empty: bool) -> None:
    """Refuse to run on an out-of-date schema; optionally create it in an empty database."""
    if initialise_empty and is_empty(url):
        upgrade(url)
        return
    at = current(url)
    if at != head():
        newer = at is not None and at not in known_revisions()
        raise (SchemaNewerThanService if newer else SchemaOutOfDate)(mismatch(at, head()))
