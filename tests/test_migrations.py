"""Alembic migrations: the migrated schema is the models', and the server checks it."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from support_requests.handlers.app import create_app
from support_requests.handlers.settings import Settings
from support_requests.storage import schema
from support_requests.storage.database import sync_url
from support_requests.storage.models import Base
from tests.helpers import MOBILE, create, customer


def _empty(db: sa.Engine) -> None:
    Base.metadata.drop_all(db)
    with db.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


def test_migrated_schema_equals_the_models(database_url: str, db: sa.Engine) -> None:
    _empty(db)
    schema.upgrade(database_url)
    assert schema.current(database_url) == schema.head()
    with db.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_downgrade_to_base_removes_every_table(database_url: str, db: sa.Engine) -> None:
    _empty(db)
    schema.upgrade(database_url)
    schema.downgrade(database_url, "base")
    assert schema.current(database_url) is None
    assert schema.is_empty(database_url)
    schema.upgrade(database_url)
    assert schema.current(database_url) == schema.head()


def test_server_refuses_to_start_on_an_out_of_date_schema(
    settings: Settings, database_url: str, db: sa.Engine
) -> None:
    _empty(db)
    schema.upgrade(database_url)
    schema.downgrade(database_url, "base")
    with db.begin() as connection:
        connection.execute(sa.text("CREATE TABLE leftover (id INTEGER)"))
    app = create_app(dataclasses.replace(settings, create_schema=False))
    with pytest.raises(schema.SchemaOutOfDate, match="supportctl db upgrade"), app.test_client():
        pass
    with db.begin() as connection:
        connection.execute(sa.text("DROP TABLE leftover"))


def test_server_refuses_to_start_on_a_schema_newer_than_it_knows_and_says_to_upgrade_it(
    settings: Settings, database_url: str, db: sa.Engine
) -> None:
    _empty(db)
    schema.upgrade(database_url)
    with db.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999_newer'"))
    app = create_app(dataclasses.replace(settings, create_schema=False))
    try:
        with pytest.raises(schema.SchemaNewerThanService) as refused, app.test_client():
            pass
        assert schema.current(database_url) == "9999_newer"
    finally:
        _empty(db)
    message = str(refused.value)
    assert "9999_newer, newer than this version of the service knows" in message
    assert f"its newest is {schema.head()}" in message
    assert "Upgrade the service" in message
    assert "run `supportctl db upgrade`" not in message


def test_server_starts_on_a_current_schema(settings: Settings, database_url: str, db: sa.Engine):
    _empty(db)
    schema.upgrade(database_url)
    app = create_app(dataclasses.replace(settings, create_schema=False))
    with app.test_client() as client:
        assert client.get("/api/mobile/support-requests").status_code == 401


def test_empty_sqlite_database_is_migrated_on_start(settings: Settings, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    app = create_app(dataclasses.replace(settings, database_url=url, create_schema=False))
    with app.test_client():
        pass
    assert schema.current(url) == schema.head()


@pytest.mark.postgres
def test_an_expand_migration_under_a_running_server_keeps_its_prepared_statements_working(
    settings: Settings, database_url: str, db: sa.Engine
) -> None:
    """psycopg prepares a statement on a connection after a few runs; a column added while
    the server runs (the expand step of a migration) must not break those prepared plans.
    A statement that selects ``*`` does break ("cached plan must not change result type"):
    the control below shows the hazard is real; the service's statements name their columns."""
    if not database_url.startswith("postgresql"):
        pytest.skip("prepared statements are PostgreSQL's")
    alice = customer()
    tables = ("support_requests", "messages", "request_events")
    with (
        create_app(settings).test_client() as client,
        psycopg.connect(
            sync_url(database_url)
            .render_as_string(hide_password=False)
            .replace("postgresql+psycopg", "postgresql"),
            autocommit=True,
        ) as control,
    ):
        created = create(client, alice)
        detail = f"{MOBILE}/{created['id']}"
        for _ in range(12):  # past psycopg's prepare threshold on every pooled connection
            assert client.get(detail, headers=alice).status_code == 200
            assert client.get(MOBILE, headers=alice).status_code == 200
            reply = client.post(f"{detail}/messages", json={"body": "warm"}, headers=alice)
            assert reply.status_code == 201
        control.execute("SELECT * FROM support_requests", prepare=True)
        with db.begin() as connection:
            for table in tables:
                connection.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN probe TEXT"))
        try:
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="cached plan"):
                control.execute("SELECT * FROM support_requests", prepare=True)
            for _ in range(6):
                assert client.get(detail, headers=alice).status_code == 200
                assert client.get(MOBILE, headers=alice).status_code == 200
                reply = client.post(f"{detail}/messages", json={"body": "after"}, headers=alice)
                assert reply.status_code == 201
        finally:
            with db.begin() as connection:
                for table in tables:
                    connection.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN probe"))
