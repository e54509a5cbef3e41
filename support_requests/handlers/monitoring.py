"""``GET /metrics``: Prometheus's scrape, outside the OpenAPI document and its bearer tokens.

Served only when ``SUPPORT_METRICS_TOKEN`` is set, and only to ``Authorization: Bearer
<that token>`` (Prometheus's ``authorization`` scrape setting); without the variable the
path is unknown (404, as any other). Answered before routing, so it is not an operation
of the contract, and never counted against a caller's rate limits.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from support_requests import metrics
from support_requests.handlers.problems import HttpProblem
from support_requests.storage.database import Database
from support_requests.storage.monitoring import outbox_health

PATH = "/metrics"


class MetricsEndpoint:
    """Answers ``GET /metrics`` with every metric, the outbox's read for this scrape."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        database: Database,
        clock: Callable[[], datetime],
    ) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.database = database
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            raise HttpProblem(
                405, "method_not_allowed", "GET /metrics only.", headers={"Allow": "GET, HEAD"}
            )
        offered = (Headers(scope=scope).get("authorization") or "").encode()
        if not hmac.compare_digest(offered, self.expected):
            raise HttpProblem(
                401,
                "unauthorized",
                "GET /metrics needs Authorization: Bearer <SUPPORT_METRICS_TOKEN>.",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        body = metrics.render(await self._outbox_gauges())
        response = Response(
            body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"}
        )
        await response(scope, receive, send)

    async def _outbox_gauges(self) -> list[GaugeMetricFamily]:
        health = await outbox_health(self.database, self.clock())
        return [
            GaugeMetricFamily(
                "support_webhook_outbox_pending",
                "Webhook deliveries waiting to succeed (pending).",
                value=health.pending,
            ),
            GaugeMetricFamily(
                "support_webhook_outbox_oldest_pending_age_seconds",
                "Age of the oldest pending webhook delivery (0 when none is pending).",
                value=health.oldest_pending_seconds,
            ),
            GaugeMetricFamily(
                "support_webhook_worker_lag_seconds",
                "How long the most overdue delivery has waited for a worker (0: none waits).",
                value=health.lag_seconds,
            ),
        ]
