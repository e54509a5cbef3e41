"""Stored records in the contract's JSON shapes (mobile and admin), and the envelope.

A request's views live in ``support_requests.views`` (webhook events show them too) and
are named here as well, where the handlers have always found them.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from support_requests.domain.clock import iso_ms
from support_requests.domain.read_state import Badge, ReadState
from support_requests.storage.attachments import StoredAttachment
from support_requests.views import ATTACHMENT_PATHS as ATTACHMENT_PATHS
from support_requests.views import admin_detail as admin_detail
from support_requests.views import admin_summary as admin_summary
from support_requests.views import attachment_entry as attachment_entry
from support_requests.views import mobile_detail as mobile_detail
from support_requests.views import mobile_summary as mobile_summary


def uploaded_attachment(attachment: StoredAttachment) -> dict[str, Any]:
    """An upload, as its ``201`` shows it: to be attached before ``expiresAt``."""
    return {
        "id": attachment.id,
        "fileName": attachment.file_name,
        "contentType": attachment.content_type,
        "size": attachment.size,
        "width": attachment.width,
        "height": attachment.height,
        "createdAt": iso_ms(attachment.created_at),
        "expiresAt": iso_ms(attachment.expires_at),
    }


def read_state(state: ReadState) -> dict[str, Any]:
    """A request's read state after the customer marked it."""
    return {"lastReadMessageId": state.last_read_message_id, "unreadCount": state.unread_count}


def badge(shown: Badge) -> dict[str, Any]:
    """The customer's badge."""
    return {"unreadCount": shown.unread_count, "requestsWithUnread": shown.requests_with_unread}


def envelope(
    message: str,
    data: Any,
    *,
    status: int = 200,
    meta: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A 2xx response: ``{"message", "data"}`` (and ``meta`` for lists) as JSON."""
    body: dict[str, Any] = {"message": message, "data": data}
    if meta is not None:
        body["meta"] = meta
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )
