"""The events the service tells webhook endpoints about, and when it tries again."""

from __future__ import annotations

import random
from datetime import timedelta

CREATED = "support_request.created"
MESSAGE_CREATED = "support_request.message_created"
STATUS_CHANGED = "support_request.status_changed"
ASSIGNED = "support_request.assigned"
RATED = "support_request.rated"
ATTACHMENT_REMOVED = "support_request.attachment_removed"
PUSH = "notification.push"
# Sent to one endpoint by `POST /api/admin/webhooks/{id}/ping`, whatever it subscribes to.
PING = "webhook.ping"

# What an endpoint may subscribe to, in the spec's order.
EVENT_TYPES = (CREATED, MESSAGE_CREATED, STATUS_CHANGED, ASSIGNED, RATED, ATTACHMENT_REMOVED, PUSH)

RETRY_FOR = timedelta(hours=24)
TIMEOUT_SECONDS = 10.0

# A worker's defaults (``supportctl worker`` options): deliveries in flight in one worker, to
# one endpoint over all workers, and how long a claim lasts (longer than an attempt).
DEFAULT_CONCURRENCY = 16
DEFAULT_PER_ENDPOINT = 4
DEFAULT_LEASE_SECONDS = 60.0


def retry_delay(attempts: int, first_seconds: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 for the first): the first
    retry after ``first_seconds``, each next one twice as late, with ±20 % jitter so that
    endpoints that failed together are not retried together."""
    base = first_seconds * 2 ** max(0, attempts - 1)
    jitter = (rng or random).uniform(0.8, 1.2)
    return float(min(base * jitter, RETRY_FOR.total_seconds()))
