"""Webhook endpoints (tag ``admin``): register, list, change and remove the endpoints
events are sent to, follow their deliveries, retry one, and ping. The signing secret is
in the registration's answer and nowhere else."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from support_requests.domain.clock import iso_ms
from support_requests.handlers.auth import caller
from support_requests.handlers.render import envelope
from support_requests.storage.outbox import PENDING
from support_requests.storage.support_desk import SupportDesk
from support_requests.storage.webhooks import WebhookEndpoints

PATH = "/api/admin/webhooks"


def _endpoint(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "description": row.description,
        "enabled": row.enabled,
        "disabledReason": row.disabled_reason,
        "createdAt": iso_ms(row.created_at),
        "updatedAt": iso_ms(row.updated_at),
    }


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "eventId": row.event_id,
        "eventType": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "lastResponseStatus": row.last_response_status,
        "lastError": row.last_error,
        "lastAttemptAt": iso_ms(row.last_attempt_at),
        "nextAttemptAt": iso_ms(row.next_attempt_at) if row.status == PENDING else None,
        "createdAt": iso_ms(row.created_at),
        "completedAt": iso_ms(row.completed_at),
    }


async def create_webhook_endpoint(
    desk: SupportDesk, webhooks: WebhookEndpoints, body: dict[str, Any], token_info: dict[str, Any]
) -> Response:
    """Register an endpoint; the answer carries its signing secret, this once."""
    admin = caller(token_info)
    await desk.remember_admin(admin)
    created = await webhooks.create(
        admin, url=body["url"], events=body["events"], description=body.get("description")
    )
    shown = {**_endpoint(created.endpoint), "secret": created.secret}
    return envelope(
        "Webhook endpoint created successfully",
        shown,
        status=201,
        headers={"Location": f"{PATH}/{shown['id']}"},
    )


async def list_webhook_endpoints(
    desk: SupportDesk, webhooks: WebhookEndpoints, token_info: dict[str, Any]
) -> Response:
    """Every endpoint, the oldest first."""
    await desk.remember_admin(caller(token_info))
    rows = await webhooks.list_all()
    return envelope("Webhook endpoints fetched successfully", [_endpoint(row) for row in rows])


async def get_webhook_endpoint(
    desk: SupportDesk, webhooks: WebhookEndpoints, endpoint_id: str, token_info: dict[str, Any]
) -> Response:
    """One endpoint."""
    await desk.remember_admin(caller(token_info))
    row = await webhooks.get(endpoint_id)
    return envelope("Webhook endpoint fetched successfully", _endpoint(row))


async def update_webhook_endpoint(
    desk: SupportDesk,
    webhooks: WebhookEndpoints,
    endpoint_id: str,
    body: dict[str, Any],
    token_info: dict[str, Any],
) -> Response:
    """Change an endpoint's URL, events, description, or whether it is enabled."""
    await desk.remember_admin(caller(token_info))
    row = await webhooks.update(endpoint_id, body)
    return envelope("Webhook endpoint updated successfully", _endpoint(row))


async def delete_webhook_endpoint(
    desk: SupportDesk, webhooks: WebhookEndpoints, endpoint_id: str, token_info: dict[str, Any]
) -> Response:
    """Remove an endpoint and its deliveries."""
    await desk.remember_admin(caller(token_info))
    await webhooks.delete(endpoint_id)
    return Response(status_code=204)


async def list_webhook_deliveries(
    desk: SupportDesk,
    webhooks: WebhookEndpoints,
    endpoint_id: str,
    token_info: dict[str, Any],
    limit: int,
    cursor: str | None = None,
    status: str | None = None,
) -> Response:
    """One page of an endpoint's deliveries, newest first."""
    await desk.remember_admin(caller(token_info))
    page = await webhooks.deliveries(endpoint_id, limit=limit, cursor=cursor, status=status)
    return envelope(
        "Webhook deliveries fetched successfully",
        [_delivery(row) for row in page.deliveries],
        meta={"nextCursor": page.next_cursor},
    )


async def retry_webhook_delivery(
    desk: SupportDesk,
    webhooks: WebhookEndpoints,
    endpoint_id: str,
    delivery_id: int,
    token_info: dict[str, Any],
) -> Response:
    """Send a pending or failed delivery again, now."""
    await desk.remember_admin(caller(token_info))
    row = await webhooks.retry(endpoint_id, delivery_id)
    return envelope("Webhook delivery queued for retry", _delivery(row))


async def ping_webhook_endpoint(
    desk: SupportDesk, webhooks: WebhookEndpoints, endpoint_id: str, token_info: dict[str, Any]
) -> Response:
    """Queue a ``webhook.ping`` event for one endpoint."""
    await desk.remember_admin(caller(token_info))
    row = await webhooks.ping(endpoint_id)
    return envelope("Ping queued", _delivery(row), status=202)
