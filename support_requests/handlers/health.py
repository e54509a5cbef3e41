"""Liveness and readiness, outside auth (tag ``health``)."""

from __future__ import annotations

from sqlalchemy import text
from starlette.responses import Response

from support_requests.handlers.problems import HttpProblem
from support_requests.handlers.render import envelope
from support_requests.storage import schema
from support_requests.storage.database import Database


async def liveness() -> Response:
    """The process answers; the database is not touched."""
    return envelope("Alive", {"status": "ok"})


async def readiness(database: Database, expected_revision: str | None) -> Response:
    """The database answers and its schema is the one this version needs."""
    async with database.reading() as connection:
        await connection.execute(text("SELECT 1"))
        if expected_revision is not None:
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            if revision != expected_revision:
                raise HttpProblem(
                    503,
                    "service_unavailable",
                    schema.mismatch(revision, expected_revision),
                    headers={"Retry-After": "30"},
                )
    return envelope("Ready", {"status": "ok"})
