"""Webhook endpoints as stored, and the admin's view of their deliveries.

An endpoint's URL is checked when it is registered and when it changes
(``support_requests.webhooks.addresses``: scheme, then every address its host resolves
to); a refusal is a 422 on ``url``. Its signing secret is issued here, returned once,
and stored sealed (``SecretBox``) when the operator set ``SUPPORT_SECRET_KEY``; no
other read returns it. Deliveries are written by the outbox in each change's
transaction and worked by the workers; this module pages them, puts one back in the
queue (a retry), and queues a ping.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Select, bindparam, delete, func, insert, select, update

from support_requests.domain.clock import now_ms
from support_requests.domain.errors import AlreadyDelivered, FieldProblem, NotFound, RuleViolation
from support_requests.domain.principal import Principal
from support_requests.domain.webhooks import EVENT_TYPES, PING
from support_requests.storage import outbox, pagination
from support_requests.storage.database import Database
from support_requests.storage.models import NOTIFY_CHANNEL
from support_requests.webhooks.addresses import Lookup, UnsafeUrl, parse, resolve, system_lookup
from support_requests.webhooks.secrets import SecretBox, new_secret

# Why an endpoint is disabled, when an admin disabled it (the worker writes ``gone``).
DISABLED_BY_ADMIN: Final = "manual"
# The longest DNS name; a refusal's reason is cut to fit a problem's field message.
MAX_HOST_LENGTH: Final = 253
MAX_REASON_LENGTH: Final = 500

_endpoints = outbox.endpoints_table
_events = outbox.events_table
_deliveries = outbox.deliveries_table
_e = _endpoints.c
_v = _events.c
_d = _deliveries.c

# Every column but the secret: no read but the registration's answer shows it.
ENDPOINT_COLUMNS = tuple(column for column in _endpoints.c if column.name != "secret")
_ENDPOINT = select(*ENDPOINT_COLUMNS).where(_e.id == bindparam("endpoint_id"))
_LOCK_ENDPOINT = _ENDPOINT.with_for_update()
# A ping locks its endpoint against other pings only (FOR NO KEY UPDATE on PostgreSQL:
# deliveries that other changes insert meanwhile still take their key share).
_LOCK_FOR_PING = (
    select(_e.id).where(_e.id == bindparam("endpoint_id")).with_for_update(key_share=True)
)
_ENDPOINTS = select(*ENDPOINT_COLUMNS).order_by(_e.created_at, _e.id)
_INSERT_ENDPOINT = insert(_endpoints)
_UPDATE_ENDPOINT = update(_endpoints).where(_e.id == bindparam("endpoint_id"))
_DELETE_ENDPOINT = delete(_endpoints).where(_e.id == bindparam("endpoint_id"))

DELIVERY_COLUMNS = (
    _d.id,
    _d.endpoint_id,
    _v.public_id.label("event_id"),
    _v.type.label("event_type"),
    _d.status,
    _d.attempts,
    _d.last_response_status,
    _d.last_error,
    _d.last_attempt_at,
    _d.next_attempt_at,
    _d.created_at,
    _d.completed_at,
)
_WITH_EVENTS = _deliveries.join(_events, _v.id == _d.event_id)
_DELIVERY = (
    select(*DELIVERY_COLUMNS)
    .select_from(_WITH_EVENTS)
    .where(_d.id == bindparam("delivery_id"), _d.endpoint_id == bindparam("endpoint_id"))
)
_LOCK_DELIVERY = (
    select(_d.status)
    .where(_d.id == bindparam("delivery_id"), _d.endpoint_id == bindparam("endpoint_id"))
    .with_for_update()
)
_REQUEUE = (
    update(_deliveries)
    .where(_d.id == bindparam("delivery_id"))
    .values(status=outbox.PENDING, next_attempt_at=bindparam("now"), completed_at=None)
)
_NEWEST_PING = (
    select(*DELIVERY_COLUMNS)
    .select_from(_WITH_EVENTS)
    .where(_d.endpoint_id == bindparam("endpoint_id"), _v.type == PING)
    .order_by(_d.id.desc())
    .limit(1)
)
_WAKE_WORKERS = select(func.pg_notify(NOTIFY_CHANNEL, ""))


@functools.cache
def _deliveries_page(*, status: bool, after: bool) -> Select[Any]:
    """An endpoint's deliveries, newest first (``ix_webhook_deliveries_endpoint``), built
    once per shape; one row more than the page."""
    conditions = [_d.endpoint_id == bindparam("endpoint_id")]
    if status:
        conditions.append(_d.status == bindparam("status"))
    if after:
        conditions.append(_d.id < bindparam("after_id", type_=_d.id.type))
    return (
        select(*DELIVERY_COLUMNS)
        .select_from(_WITH_EVENTS)
        .where(*conditions)
        .order_by(_d.id.desc())
        .limit(bindparam("rows"))
    )


def new_endpoint_id() -> str:
    """An opaque endpoint id: ``whe_`` and 128 random bits."""
    return "whe_" + secrets.token_urlsafe(16)


def subscribed(events: Sequence[str]) -> list[str]:
    """The event types as stored and shown: once each, in the contract's order."""
    return [event for event in EVENT_TYPES if event in events]


def _description(text: str | None) -> str | None:
    """A description trimmed like every text field; blank is none."""
    return (text or "").strip() or None


@dataclass(frozen=True)
class NewEndpoint:
    """A registered endpoint, and its signing secret as issued (shown this once)."""

    endpoint: Any
    secret: str


@dataclass(frozen=True)
class DeliveryPage:
    """One page of an endpoint's deliveries, and the cursor of the next if any."""

    deliveries: list[Any]
    next_cursor: str | None


class WebhookEndpoints:
    """Webhook endpoints for admins: register, list, change, remove; their deliveries.

    ``allow_http`` and ``allow_private`` are ``SUPPORT_WEBHOOK_ALLOW_HTTP`` and
    ``_ALLOW_PRIVATE``; ``lookup`` resolves host names (tests answer without DNS).
    """

    def __init__(
        self,
        database: Database,
        box: SecretBox,
        *,
        allow_http: bool = False,
        allow_private: bool = False,
        lookup: Lookup = system_lookup,
        clock: Callable[[], datetime] = now_ms,
    ) -> None:
        self.database = database
        self.box = box
        self.allow_http = allow_http
        self.allow_private = allow_private
        self.lookup = lookup
        self.clock = clock

    async def check_url(self, url: str) -> None:
        """``RuleViolation`` on ``url`` unless the service may call it: its scheme, and every
        address its host resolves to."""
        try:
            target = parse(url, allow_http=self.allow_http)
            if len(target.host) > MAX_HOST_LENGTH:
                raise UnsafeUrl(f"has a host name longer than {MAX_HOST_LENGTH} characters")
            await resolve(target, allow_private=self.allow_private, lookup=self.lookup)
        except UnsafeUrl as refusal:
            reason = str(refusal)
            if len(reason) > MAX_REASON_LENGTH:  # it may quote a part of a 2 KiB URL
                reason = reason[: MAX_REASON_LENGTH - 1] + "…"
            raise RuleViolation([FieldProblem("url", reason)]) from None

    async def create(
        self, admin: Principal, *, url: str, events: Sequence[str], description: str | None
    ) -> NewEndpoint:
        """Register an endpoint, enabled, with a fresh signing secret."""
        await self.check_url(url)
        secret = new_secret()
        now = self.clock()
        endpoint_id = new_endpoint_id()
        async with self.database.writing() as connection:
            await connection.execute(
                _INSERT_ENDPOINT,
                {
                    "id": endpoint_id,
                    "url": url,
                    "description": _description(description),
                    "events": subscribed(events),
                    "secret": self.box.seal(secret),
                    "enabled": True,
                    "disabled_reason": None,
                    "created_by": admin.sub,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            endpoint = (await connection.execute(_ENDPOINT, {"endpoint_id": endpoint_id})).first()
        return NewEndpoint(endpoint, secret)

    async def list_all(self) -> list[Any]:
        """Every endpoint, the oldest first."""
        async with self.database.reading() as connection:
            return (await connection.execute(_ENDPOINTS)).all()

    async def get(self, endpoint_id: str) -> Any:
        """One endpoint, or ``NotFound``."""
        async with self.database.reading() as connection:
            endpoint = (await connection.execute(_ENDPOINT, {"endpoint_id": endpoint_id})).first()
        if endpoint is None:
            raise _not_found(endpoint_id)
        return endpoint

    async def update(self, endpoint_id: str, requested: dict[str, Any]) -> Any:
        """Apply the contract's ``url``, ``events``, ``description`` and ``enabled``: a new URL
        is checked first; disabling records why, enabling clears it."""
        if "url" in requested:
            await self.check_url(requested["url"])
        changes: dict[str, Any] = {"updated_at": self.clock()}
        if "url" in requested:
            changes["url"] = requested["url"]
        if "events" in requested:
            changes["events"] = subscribed(requested["events"])
        if "description" in requested:
            changes["description"] = _description(requested["description"])
        async with self.database.writing() as connection:
            current = (
                await connection.execute(_LOCK_ENDPOINT, {"endpoint_id": endpoint_id})
            ).first()
            if current is None:
                raise _not_found(endpoint_id)
            enabled = requested.get("enabled")
            if enabled is True:
                changes.update(enabled=True, disabled_reason=None)
            elif enabled is False and current.enabled:
                changes.update(enabled=False, disabled_reason=DISABLED_BY_ADMIN)
            await connection.execute(_UPDATE_ENDPOINT, {**changes, "endpoint_id": endpoint_id})
            return (await connection.execute(_ENDPOINT, {"endpoint_id": endpoint_id})).first()

    async def delete(self, endpoint_id: str) -> None:
        """Remove an endpoint; its deliveries go with it (the foreign key cascades)."""
        async with self.database.autocommit() as connection:
            removed = await connection.execute(_DELETE_ENDPOINT, {"endpoint_id": endpoint_id})
        if removed.rowcount != 1:
            raise _not_found(endpoint_id)

    async def deliveries(
        self, endpoint_id: str, *, limit: int, cursor: str | None, status: str | None
    ) -> DeliveryPage:
        """One page of the endpoint's deliveries, newest first."""
        scope = pagination.scope_of(listing="deliveries", endpoint=endpoint_id, status=status)
        parameters: dict[str, Any] = {"endpoint_id": endpoint_id, "rows": limit + 1}
        if status is not None:
            parameters["status"] = status
        if cursor is not None:
            _, parameters["after_id"] = pagination.decode(cursor, scope)
        statement = _deliveries_page(status=status is not None, after=cursor is not None)
        async with self.database.reading() as connection:
            if await connection.scalar(_ENDPOINT, {"endpoint_id": endpoint_id}) is None:
                raise _not_found(endpoint_id)
            rows = (await connection.execute(statement, parameters)).all()
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = pagination.encode(rows[-1].created_at, rows[-1].id, scope)
        return DeliveryPage(rows, next_cursor)

    async def retry(self, endpoint_id: str, delivery_id: int) -> Any:
        """Put a pending or failed delivery back in the queue, due now (its attempts kept);
        one that succeeded is ``AlreadyDelivered``."""
        key = {"endpoint_id": endpoint_id, "delivery_id": delivery_id}
        async with self.database.writing() as connection:
            status = await connection.scalar(_LOCK_DELIVERY, key)
            if status is None:
                raise NotFound(f"Delivery {delivery_id} of endpoint {endpoint_id} was not found.")
            if status == outbox.SUCCEEDED:
                raise AlreadyDelivered(
                    f"Delivery {delivery_id} succeeded already; there is nothing to retry."
                )
            await connection.execute(_REQUEUE, {"delivery_id": delivery_id, "now": self.clock()})
            if not self.database.is_sqlite:
                await connection.execute(_WAKE_WORKERS)  # sent at commit
            return (await connection.execute(_DELIVERY, key)).first()

    async def ping(self, endpoint_id: str) -> Any:
        """Queue a ``webhook.ping`` event for this endpoint alone; its delivery."""
        event = outbox.Event(PING, {"endpointId": endpoint_id})
        async with self.database.writing() as connection:
            if await connection.scalar(_LOCK_FOR_PING, {"endpoint_id": endpoint_id}) is None:
                raise _not_found(endpoint_id)
            await outbox.enqueue(connection, [event], self.clock(), endpoint_id=endpoint_id)
            return (await connection.execute(_NEWEST_PING, {"endpoint_id": endpoint_id})).first()


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"Webhook endpoint {endpoint_id} was not found.")
