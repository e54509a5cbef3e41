"""Liveness and readiness probes, outside authentication."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from support_requests.handlers.app import create_app
from support_requests.storage import schema
from support_requests.storage.models import Base


def test_liveness_answers_without_a_token(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"message": "Alive", "data": {"status": "ok"}}


def test_readiness_checks_the_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"message": "Ready", "data": {"status": "ok"}}


def test_readiness_is_503_when_the_schema_falls_behind(settings, database_url, db):
    Base.metadata.drop_all(db)
    with db.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    schema.upgrade(database_url)
    app = create_app(dataclasses.replace(settings, create_schema=False))
    with app.test_client() as client:
        assert client.get("/readyz").status_code == 200
        with db.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert "at 0001, this version needs" in response.json()["detail"]
    assert "supportctl db upgrade" in response.json()["detail"]
    assert int(response.headers["retry-after"]) > 0


def test_readiness_on_a_schema_newer_than_this_version_says_to_upgrade_the_service(
    settings, database_url, db
):
    Base.metadata.drop_all(db)
    with db.begin() as connection:
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    schema.upgrade(database_url)
    app = create_app(dataclasses.replace(settings, create_schema=False))
    try:
        with app.test_client() as client:
            with db.begin() as connection:
                connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999_new'"))
            response = client.get("/readyz")
    finally:
        with db.begin() as connection:
            connection.execute(sa.text("DROP TABLE alembic_version"))
    assert response.status_code == 503
    problem = response.json()
    assert problem["code"] == "service_unavailable"
    assert "9999_new, newer than this version of the service knows" in problem["detail"]
    assert "Upgrade the service" in problem["detail"]
    assert "supportctl db upgrade" not in problem["detail"]
