"""``supportctl worker``: deliver webhook events, configured by ``SUPPORT_*`` like ``serve``.

Run as many as you like on PostgreSQL (they claim with ``FOR UPDATE SKIP LOCKED`` and
wake on ``LISTEN/NOTIFY``); on SQLite, ``serve`` already runs one (``SUPPORT_WEBHOOK_WORKER``).
SIGTERM or SIGINT stops it gracefully: no new claims, deliveries in flight get their
timeout to finish, the rest are released for another attempt. One JSON line per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from support_requests.cli.local import local_settings
from support_requests.cli.operator import database_error, shown_url
from support_requests.domain.webhooks import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_PER_ENDPOINT,
)

log = logging.getLogger("support_requests.webhooks")


def worker(
    concurrency: Annotated[
        int,
        typer.Option(metavar="N", min=1, help="Deliveries in flight at once, over all endpoints."),
    ] = DEFAULT_CONCURRENCY,
    per_endpoint: Annotated[
        int,
        typer.Option(
            metavar="N", min=1, help="Deliveries in flight to one endpoint, over all workers."
        ),
    ] = DEFAULT_PER_ENDPOINT,
    lease_seconds: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=11,
            help="How long a claim lasts: a worker killed mid-delivery leaves it to another "
            "after this (longer than the 10 s attempt timeout).",
        ),
    ] = DEFAULT_LEASE_SECONDS,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit.")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            min=1,
            max=65535,
            help="Serve this worker's Prometheus metrics (deliveries by outcome, their "
            "duration) at http://ADDRESS:PORT/metrics, on a port of its own.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Interface for --metrics-port.")
    ] = "127.0.0.1",
) -> None:
    """Deliver webhook events from the outbox until stopped (SIGTERM/SIGINT)."""
    from sqlalchemy.exc import SQLAlchemyError

    from support_requests.handlers.observability import configure_logging
    from support_requests.storage import schema
    from support_requests.storage.database import Database, sync_url
    from support_requests.storage.deliveries import WORKER_SESSION
    from support_requests.tracing import traces_for
    from support_requests.webhooks.worker import Worker

    settings = local_settings()
    configure_logging()
    url = settings.database_url
    try:
        schema.ensure_current(url, initialise_empty=sync_url(url).get_backend_name() == "sqlite")
    except schema.SchemaOutOfDate as problem:
        log.error(str(problem))
        raise typer.Exit(1) from None
    except (SQLAlchemyError, OSError) as error:
        log.error(f"{shown_url(url)}: {database_error(error)}")
        raise typer.Exit(1) from None

    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)

    async def deliver() -> None:
        traces = traces_for(settings.tracing)
        database = Database(
            url,
            pool_size=settings.pool_size,
            tracer=traces.tracer if traces else None,
            session=WORKER_SESSION,
        )
        runner = Worker.from_settings(
            database,
            settings,
            concurrency=concurrency,
            per_endpoint=per_endpoint,
            lease_seconds=lease_seconds,
            tracer=traces.tracer if traces else None,
        )
        fields = {"database": shown_url(url), "concurrency": concurrency, "once": once}
        log.info("webhook worker started", extra={"fields": fields})
        try:
            if once:
                await runner.drain()
            else:
                loop = asyncio.get_running_loop()
                for stop_signal in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(stop_signal, runner.stop)
                await runner.run()
        finally:
            await database.dispose()
            if traces is not None:
                traces.shut_down()
        log.info("webhook worker stopped", extra={"fields": {"delivered": runner.delivered}})

    asyncio.run(deliver())
