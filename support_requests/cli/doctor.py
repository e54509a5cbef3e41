"""``supportctl doctor``: is this machine's configuration one the service can run on?

One row per check, each with what to do when it fails; exit 1 when any fails (a warning
does not fail). ``--json`` prints the rows for scripts. It reads the same ``SUPPORT_*``
variables as ``supportctl serve`` and talks to what they name: the database, Redis, the
JWKS endpoint, the attachment directory; it writes nothing but a probe file in that
directory (removed at once).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from support_requests.cli.render import make_console

if TYPE_CHECKING:
    from support_requests.handlers.settings import Settings
    from support_requests.storage.database import Database

OK, WARN, FAIL = "ok", "warn", "fail"
LAG_LIMIT_SECONDS = 60.0
OLD_PENDING_SECONDS = 3600.0
STYLES = {OK: "green", WARN: "yellow", FAIL: "bold red"}


@dataclass(frozen=True)
class Check:
    """One row: what was checked, how it went, what was seen, and what to do about it."""

    check: str
    status: str
    detail: str
    fix: str = ""


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check the configuration, database and schema, Redis, token keys, attachment store
    and webhook outbox; exit 1 if any check fails."""
    checks = asyncio.run(run_checks())
    if as_json:
        typer.echo(json.dumps([asdict(check) for check in checks], indent=2))
    else:
        table = Table(title="supportctl doctor")
        for column in ("check", "status", "detail", "what to do"):
            table.add_column(column, overflow="fold")
        for check in checks:
            table.add_row(
                check.check, Text(check.status, style=STYLES[check.status]), check.detail, check.fix
            )
        make_console().print(table)
    if any(check.status == FAIL for check in checks):
        raise typer.Exit(1)


async def run_checks() -> list[Check]:
    """Every check, in the order an operator would fix them."""
    from support_requests.handlers.settings import ConfigurationError, Settings
    from support_requests.storage.database import Database

    try:
        settings = Settings.from_env()
    except (ConfigurationError, OSError) as error:
        return [Check("configuration", FAIL, str(error), "Fix the variable it names.")]
    checks = [Check("configuration", OK, "SUPPORT_* variables read")]
    checks.append(_keys(settings))
    if settings.jwks_url is not None:
        checks.append(await _jwks(settings))
    database = Database(settings.database_url)
    try:
        reachable = await _database(database, settings)
        checks.append(reachable)
        if reachable.status == OK:
            checks.append(await asyncio.to_thread(_schema, settings))
            if checks[-1].status == OK:
                checks.append(await _outbox(database, settings))
                checks.append(await _webhook_secrets(database, settings))
    finally:
        await database.dispose()
    checks.append(await _redis(settings))
    checks.append(_attachments(settings))
    checks.append(_metrics(settings))
    return checks


def _keys(settings: Settings) -> Check:
    from support_requests.handlers.settings import KeyMode

    if settings.key_mode is KeyMode.DEV_SECRET:
        return Check(
            "token keys",
            WARN,
            settings.key_description,
            "Set SUPPORT_JWT_SECRET, SUPPORT_JWT_PUBLIC_KEY or SUPPORT_JWKS_URL for anything "
            "but local use.",
        )
    return Check("token keys", OK, settings.key_description)


async def _jwks(settings: Settings) -> Check:
    import httpx

    assert settings.jwks_url is not None
    try:
        async with httpx.AsyncClient(timeout=settings.jwks_timeout) as client:
            response = await client.get(settings.jwks_url)
        keys = response.json().get("keys") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as error:
        return Check(
            "JWKS endpoint",
            FAIL,
            f"{settings.jwks_url}: {error}",
            "Check SUPPORT_JWKS_URL and that this host can reach it.",
        )
    usable = [
        key
        for key in keys or []
        if isinstance(key, dict) and key.get("kty") in ("RSA", "EC") and key.get("kid")
    ]
    if not usable:
        return Check(
            "JWKS endpoint",
            FAIL,
            f"{settings.jwks_url} answered {response.status_code} with no RSA or EC key "
            "that has a kid",
            "Point SUPPORT_JWKS_URL at your identity provider's JWKS (…/.well-known/jwks.json).",
        )
    return Check("JWKS endpoint", OK, f"{len(usable)} key(s) at {settings.jwks_url}")


async def _database(database: Database, settings: Settings) -> Check:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from support_requests.cli.operator import shown_url

    shown = shown_url(settings.database_url)
    try:
        async with database.reading() as connection:
            await connection.scalar(text("SELECT 1"))
    except DBAPIError as error:
        return Check(
            "database",
            FAIL,
            f"{shown}: {str(error.orig or error).strip().splitlines()[0]}",
            "Check SUPPORT_DATABASE_URL, that the server runs and this host may connect.",
        )
    return Check("database", OK, shown)


def _schema(settings: Settings) -> Check:
    from support_requests.storage import schema

    at, needed = schema.current(settings.database_url), schema.head()
    if at == needed:
        return Check("schema", OK, f"at revision {at}")
    if (
        at is None
        and settings.database_url.startswith("sqlite")
        and schema.is_empty(settings.database_url)
    ):
        return Check("schema", WARN, "empty database", "supportctl serve creates it on start.")
    return Check(
        "schema",
        FAIL,
        f"at {at or 'no revision'}, this version needs {needed}",
        "Run supportctl db upgrade (after a backup), then start the service.",
    )


async def _outbox(database: Database, settings: Settings) -> Check:
    from support_requests.domain.clock import now_ms
    from support_requests.storage.monitoring import outbox_health

    now: datetime = now_ms()
    health = await outbox_health(database, now)
    detail = (
        f"{health.pending} pending, oldest {health.oldest_pending_seconds:.0f} s, "
        f"waiting for a worker {health.lag_seconds:.0f} s"
    )
    if health.lag_seconds > LAG_LIMIT_SECONDS:
        worker = (
            "supportctl serve (its embedded worker; SUPPORT_WEBHOOK_WORKER=1)"
            if settings.embedded_worker
            else "supportctl worker"
        )
        return Check(
            "webhook outbox", FAIL, detail, f"Deliveries are not being made: start {worker}."
        )
    if health.oldest_pending_seconds > OLD_PENDING_SECONDS:
        return Check(
            "webhook outbox",
            WARN,
            detail,
            "A receiver keeps failing: see supportctl admin webhooks deliveries ENDPOINT.",
        )
    return Check("webhook outbox", OK, detail)


async def _webhook_secrets(database: Database, settings: Settings) -> Check:
    from sqlalchemy import select

    from support_requests.storage.models import WebhookEndpoint
    from support_requests.webhooks.secrets import SecretBox, SecretUnavailable

    async with database.reading() as connection:
        result = await connection.execute(select(WebhookEndpoint.secret))
        stored = [str(row.secret) for row in result]
    box = SecretBox(settings.secret_key)
    unreadable = 0
    for secret in stored:
        try:
            box.open(secret)
        except SecretUnavailable:
            unreadable += 1
    plain = sum(1 for secret in stored if secret.startswith("whsec_"))
    if unreadable:
        return Check(
            "webhook secrets",
            FAIL,
            f"{unreadable} of {len(stored)} cannot be opened with this SUPPORT_SECRET_KEY",
            "Set SUPPORT_SECRET_KEY to the key they were sealed with (or rotate each "
            "endpoint's secret).",
        )
    if plain and settings.secret_key is not None:
        return Check(
            "webhook secrets",
            WARN,
            f"{plain} of {len(stored)} stored unsealed (added before SUPPORT_SECRET_KEY was set)",
            "Rotate those endpoints' secrets to store them sealed.",
        )
    sealed = "sealed with SUPPORT_SECRET_KEY" if settings.secret_key else "stored as issued"
    return Check("webhook secrets", OK, f"{len(stored)} endpoint secret(s), {sealed}")


async def _redis(settings: Settings) -> Check:
    from support_requests.storage.rate_limits import RateLimiter

    if settings.redis_url is None:
        return Check("redis", OK, "not configured: rate-limit budgets are per process")
    limiter = RateLimiter(settings.redis_url)
    try:
        answers = await limiter.check()
    finally:
        limiter.close()
    if not answers:
        return Check(
            "redis",
            FAIL,
            f"{settings.redis_url} does not answer",
            "Start Redis or fix SUPPORT_REDIS_URL (the API fails open to per-process budgets "
            "meanwhile).",
        )
    return Check("redis", OK, f"{settings.redis_url} answers: budgets shared")


def _attachments(settings: Settings) -> Check:
    directory = settings.attachment_dir
    if directory is None:
        return Check("attachment store", OK, "in the database")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-") as probe:
            probe.write(b"probe")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        return Check(
            "attachment store",
            FAIL,
            f"{directory}: {error.strerror or error}",
            "Create SUPPORT_ATTACHMENT_DIR, writable by the service's user, on storage every "
            "server process shares.",
        )
    return Check("attachment store", OK, f"{Path(directory).resolve()} is writable")


def _metrics(settings: Settings) -> Check:
    if settings.metrics_token is None:
        return Check(
            "metrics", WARN, "GET /metrics is off", "Set SUPPORT_METRICS_TOKEN to scrape it."
        )
    return Check("metrics", OK, "GET /metrics with the bearer SUPPORT_METRICS_TOKEN")
