"""The outbox: a change's webhook events, written in the change's own transaction.

``enqueue`` runs inside the transaction that makes the change (``Database.writing``),
so a change that commits always yields its events and one that rolls back never does;
nothing is written "on the side" after a commit. Each event is stored once
(``webhook_events``: the exact body every attempt signs and sends) with one
``webhook_deliveries`` row per endpoint that subscribes to its type; workers deliver
those (``support_requests.webhooks.worker``). An event no enabled endpoint takes is not
stored at all. On PostgreSQL the deliveries' insert wakes the workers at commit (a trigger
NOTIFYs).

A change reads its ``Subscribers`` once (``read_subscribers``; not at all when the lock that
started it saw no enabled endpoint), builds only the events of the types some endpoint takes
(``Subscribers.take``: a push's devices and badge are read only when an endpoint takes
pushes), and hands the same read to ``enqueue``, which writes the events in one statement
and their deliveries in a second (on PostgreSQL both in one).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    DateTime,
    Insert,
    Integer,
    String,
    Table,
    bindparam,
    column,
    insert,
    literal,
    select,
    values,
)

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
_EVENT_COLUMNS = ("public_id", "type", "request_id", "customer_id", "body", "created_at")
_INSERT_DELIVERIES = insert(deliveries_table)


@functools.cache
def _insert_events(count: int) -> Insert:
    """``count`` events in one statement (a change yields at most a handful), answering
    each one's id by its ``public_id``: one round trip for all of a change's events."""
    rows = [
        {name: bindparam(f"{name}_{i}", type_=events_table.c[name].type) for name in _EVENT_COLUMNS}
        for i in range(count)
    ]
    return insert(events_table).values(rows).returning(events_table.c.id, events_table.c.public_id)


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

    @classmethod
    def read(cls, rows: Iterable[tuple[str | None, Any]]) -> Subscribers:
        """From (endpoint id, its ``events`` column) rows as read; a row without an id (an
        outer join that found no endpoint) is none."""
        return cls(tuple((id_, frozenset(events)) for id_, events in rows if id_ is not None))

    def take(self, *event_types: str) -> bool:
        """Whether some enabled endpoint takes any of ``event_types``."""
        return any(not types.isdisjoint(event_types) for _, types in self.endpoints)

    def of(self, event_type: str) -> list[str]:
        """The ids of the endpoints that take ``event_type``, in the order read."""
        return [endpoint for endpoint, types in self.endpoints if event_type in types]


_DELIVERY_COLUMNS = (
    "event_id",
    "endpoint_id",
    "order_key",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)


@functools.cache
def _insert_events_and_deliveries(count: int, deliveries: int) -> Insert:
    """PostgreSQL: ``count`` events and their ``deliveries`` in one statement (a
    data-modifying CTE), the deliveries inserted in the order of ``position``. Only to
    endpoints that still exist, each held (``FOR KEY SHARE``) until the change commits: the
    change may have read its endpoints before its transaction began, and one deleted since
    (or being deleted) gets no delivery rather than failing the change on the foreign key."""
    stored = _insert_events(count).cte("stored")
    targets = values(
        column("public_id", String),
        column("endpoint_id", String),
        column("order_key", String),
        column("position", Integer),
        name="targets",
    ).data(
        [
            (
                bindparam(f"target_public_id_{k}", type_=String),
                bindparam(f"target_endpoint_id_{k}", type_=String),
                bindparam(f"target_order_key_{k}", type_=String),
                k,
            )
            for k in range(deliveries)
        ]
    )
    at = bindparam("at", type_=DateTime)
    rows = (
        select(
            stored.c.id,
            targets.c.endpoint_id,
            targets.c.order_key,
            literal(PENDING),
            literal(0),
            at,
            at,
        )
        .select_from(
            targets.join(stored, stored.c.public_id == targets.c.public_id).join(
                endpoints_table, endpoints_table.c.id == targets.c.endpoint_id
            )
        )
        .order_by(targets.c.position)
        # FOR KEY SHARE (``read`` and ``key_share``; ``key_share`` alone is FOR NO KEY UPDATE,
        # which every other change's enqueue waits for: every write that yields an event
        # for an endpoint queued behind the last one until it committed).
        .with_for_update(of=endpoints_table, read=True, key_share=True)
    )
    return insert(deliveries_table).from_select(list(_DELIVERY_COLUMNS), rows).add_cte(stored)


async def read_subscribers(connection: DbConnection) -> Subscribers:
    """The enabled endpoints and their types: one small read (a change makes it once)."""
    rows = (await connection.execute(_SUBSCRIBERS)).all()
    return Subscribers.read((row.id, row.events) for row in rows)


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
    postgresql: bool = False,
) -> int:
    """Store ``events`` for every enabled endpoint that takes their type (or, with
    ``endpoint_id``, for that endpoint alone whatever it takes: a ping), in order, in
    ``connection``'s transaction; the number of deliveries written. ``subscribers`` is the
    change's own read of them, when it made one (``read_subscribers``); otherwise they are read
    here. On PostgreSQL (``postgresql``) events and deliveries are one statement; elsewhere
    (SQLite has no data-modifying CTEs) two."""
    if not events:
        return 0
    if endpoint_id is not None:
        subscribers = Subscribers(((endpoint_id, frozenset(event.type for event in events)),))
    elif subscribers is None:
        subscribers = await read_subscribers(connection)
    if not subscribers.endpoints:
        return 0
    taken = [(event, ends) for event in events if (ends := subscribers.of(event.type))]
    if not taken:
        return 0
    public_ids = [new_event_id() for _ in taken]
    parameters: dict[str, Any] = {}
    for i, ((event, _), public_id) in enumerate(zip(taken, public_ids, strict=True)):
        parameters |= {
            f"public_id_{i}": public_id,
            f"type_{i}": event.type,
            f"request_id_{i}": event.request_id,
            f"customer_id_{i}": event.customer_id,
            f"body_{i}": event_body(event, at),
            f"created_at_{i}": at,
        }
    # Each delivery: its event's public id, its endpoint, its order key, in the change's order.
    targets = [
        (public_id, target, None if event.request_id is None else str(event.request_id))
        for (event, endpoints), public_id in zip(taken, public_ids, strict=True)
        for target in endpoints
    ]
    if postgresql:
        parameters["at"] = at
        for k, (public_id, target, order_key) in enumerate(targets):
            parameters[f"target_public_id_{k}"] = public_id
            parameters[f"target_endpoint_id_{k}"] = target
            parameters[f"target_order_key_{k}"] = order_key
        await connection.execute(
            _insert_events_and_deliveries(len(taken), len(targets)), parameters
        )
        return len(targets)
    stored = await connection.execute(_insert_events(len(taken)), parameters)
    ids = {row.public_id: row.id for row in stored}
    deliveries = [
        {
            "event_id": ids[public_id],
            "endpoint_id": target,
            "order_key": order_key,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": at,
            "created_at": at,
        }
        for public_id, target, order_key in targets
    ]
    # One row at a time, in the change's order: delivery ids ascend with it, and the
    # workers keep one request's deliveries to an endpoint in the order of their ids.
    await connection.execute(_INSERT_DELIVERIES, deliveries)
    _wake_workers()
    return len(deliveries)


# -- waking this process's workers --------------------------------------------------------
# SQLite has no NOTIFY: the embedded worker learns of new deliveries from here. Waking it
# inside the writing transaction is safe: its claim is a write, so it queues behind this
# one and sees it committed (or, after a rollback, finds nothing and sleeps again).
_wakers: list[Callable[[], None]] = []


def on_enqueue(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` (thread-safe, quick) whenever this process enqueues deliveries;
    returns the function that stops it."""
    _wakers.append(callback)
    return lambda: _wakers.remove(callback)


def _wake_workers() -> None:
    for wake in list(_wakers):
        wake()
