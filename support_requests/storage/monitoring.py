"""What the database tells an operator about the webhook outbox (metrics, ``doctor``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, and_, bindparam, func, or_, select

from support_requests.storage.database import Database
from support_requests.storage.models import WebhookDelivery

_DELIVERIES = cast(Table, WebhookDelivery.__table__)
_PENDING = _DELIVERIES.c.status == "pending"
# Both walk the pending deliveries only (the partial index of the workers' claim).
_BACKLOG = select(
    func.count().label("pending"),
    func.min(_DELIVERIES.c.created_at).label("oldest"),
).where(_PENDING)
_DUE = select(func.min(_DELIVERIES.c.next_attempt_at)).where(
    _PENDING,
    _DELIVERIES.c.next_attempt_at <= bindparam("now"),
    or_(
        _DELIVERIES.c.claimed_until.is_(None),
        and_(_DELIVERIES.c.claimed_until < bindparam("now")),
    ),
)


@dataclass(frozen=True)
class OutboxHealth:
    """The pending deliveries: how many, how old the oldest is, and how long the most
    overdue one has waited for a worker (0 when none is waiting)."""

    pending: int
    oldest_pending_seconds: float
    lag_seconds: float


async def outbox_health(database: Database, now: datetime) -> OutboxHealth:
    """Two statements over the pending deliveries."""
    async with database.reading() as connection:
        backlog = (await connection.execute(_BACKLOG)).first()
        due = await connection.scalar(_DUE, {"now": now})
    oldest = backlog.oldest if backlog is not None else None
    return OutboxHealth(
        pending=int(backlog.pending) if backlog is not None else 0,
        oldest_pending_seconds=(now - oldest).total_seconds() if oldest else 0.0,
        lag_seconds=max(0.0, (now - due).total_seconds()) if due else 0.0,
    )
