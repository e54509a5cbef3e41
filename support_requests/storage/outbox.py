"""The outbox: a change's webhook events, written in the change's own transaction.

``enqueue`` runs inside the transaction that makes the change (``Database.writing``),
so a change that commits always yields its events and one that rolls back never does;
nothing is written "on the side" after a commit. Each event is stored once
(``webhook_events``: the exact body every attempt signs and sends) with one
``webhook_deliveries`` row per endpoint that subscribes to its type; workers deliver
those (``support_requests.webhooks.worker``). An event no enabled endpoint takes is not
stored at all, so a service without webhooks pays one small read per change.
On PostgreSQL the deliveries' insert wakes the workers at commit (a trigger NOTIFYs).

A change reads its ``Subscribers`` once (``read_subscribers``), builds only the events of the
types some endpoint takes (``Subscribers.take``: a push's devices and badge are read only
when an endpoint takes pushes), and hands the same read to ``enqueue``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Table, insert, select

from support_requests.domain.clock import iso_ms
from support_requests.storage.database import DbConnection
from support_requests.storage.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

endpoints_table = cast(Table, WebhookEndpoint.__table__)
events_table = cast(Table, WebhookEvent.__table__)
deliveries_table = cast(Table, WebhookDelivery.__table__)

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"

_SUBSCRIBERS = select(endpoints_table.c.id, endpoints_table.c.events).where(
    endpoints_table.c.enabled
)
_INSERT_EVENT = insert(events_table).returning(events_table.c.id)
_INSERT_DELIVERIES = insert(deliveries_table)


@dataclass(frozen=True)
class Event:
    """One event of a change: its type and its ``data`` (``requestId`` and ``customerId``
    always, for the request events), and the request it belongs to (deliveries of one
    request to one endpoint go in order)."""

    type: str
    data: dict[str, Any]
    request_id: int | None = None
    customer_id: str | None = None


@dataclass(frozen=True)
class Subscribers:
    """The enabled endpoints as one change reads them: each one's id and the types it takes."""

    endpoints: tuple[tuple[str, frozenset[str]], ...] = ()

    def take(self, *event_types: str) -> bool:
        """Whether some enabled endpoint takes any of ``event_types``."""
        return any(not types.isdisjoint(event_types) for _, types in self.endpoints)

    def of(self, event_type: str) -> list[str]:
        """The ids of the endpoints that take ``event_type``, in the order read."""
        return [endpoint for endpoint, types in self.endpoints if event_type in types]


async def read_subscribers(connection: DbConnection) -> Subscribers:
    """The enabled endpoints and their types: one small read (a change makes it once)."""
    rows = (await connection.execute(_SUBSCRIBERS)).all()
    return Subscribers(tuple((row.id, frozenset(row.events)) for row in rows))


def new_event_id() -> str:
    """The ``webhook-id`` of an event: the same on every attempt, unique across events."""
    return "evt_" + secrets.token_urlsafe(18)


def event_body(event: Event, at: datetime) -> str:
    """The JSON body sent for ``event``, as Standard Webhooks frames it."""
    return orjson.dumps({"type": event.type, "timestamp": iso_ms(at), "data": event.data}).decode()


async def enqueue(
    connection: DbConnection,
    events: Sequence[Event],
    at: datetime,
    *,
    endpoint_id: str | None = None,
    subscribers: Subscribers | None = None,
) -> int:
    """Store ``events`` for every enabled endpoint that takes their type (or, with
    ``endpoint_id``, for that endpoint alone whatever it takes: a ping), in order, in
    ``connection``'s transaction; the number of deliveries written. ``subscribers`` is the
    change's own read of them, when it made one (``read_subscribers``); otherwise they are read
    here."""
    if not events:
        return 0
    if endpoint_id is not None:
        subscribers = Subscribers(((endpoint_id, frozenset(event.type for event in events)),))
    elif subscribers is None:
        subscribers = await read_subscribers(connection)
    if not subscribers.endpoints:
        return 0
    deliveries: list[dict[str, Any]] = []
    for event in events:
        targets = subscribers.of(event.type)
        if not targets:
            continue
        stored = await connection.execute(
            _INSERT_EVENT,
            {
                "public_id": new_event_id(),
                "type": event.type,
                "request_id": event.request_id,
                "customer_id": event.customer_id,
                "body": event_body(event, at),
                "created_at": at,
            },
        )
        event_id = stored.scalar_one()
        order_key = None if event.request_id is None else str(event.request_id)
        deliveries.extend(
            {
                "event_id": event_id,
                "endpoint_id": target,
                "order_key": order_key,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": at,
                "created_at": at,
            }
            for target in targets
        )
    if deliveries:
        await connection.execute(_INSERT_DELIVERIES, deliveries)
    return len(deliveries)
