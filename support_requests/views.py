"""The contract's JSON shapes of stored requests, as pure functions (no HTTP, no SQL).

The API's answers (``handlers/``) and the webhook events (``webhooks/events.py``) show a
request the same way: ``support_request.created`` carries exactly what
``GET /api/admin/support-requests/{id}`` answers. Keeping these functions here, not in
``handlers/``, lets storage build an event in the change's transaction without importing
the HTTP layer (which imports storage).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from support_requests.domain.clock import iso_ms
from support_requests.domain.lifecycle import Actor, Status, allowed_actions

if TYPE_CHECKING:  # storage imports this module: a type only, no import cycle
    from support_requests.storage.support_desk import RequestRecord


def _summary(record: RequestRecord, actor: Actor) -> dict[str, Any]:
    row = record.row
    return {
        "id": row.id,
        "category": row.category,
        "subject": row.subject,
        "status": row.status,
        "isAssigned": row.assigned_admin_id is not None,
        "resolutionNote": row.resolution_note,
        "resolvedAt": iso_ms(row.resolved_at),
        "closedAt": iso_ms(row.closed_at),
        "lastCustomerMessageAt": iso_ms(row.last_customer_message_at),
        "lastAdminMessageAt": iso_ms(row.last_admin_message_at),
        "createdAt": iso_ms(row.created_at),
        "updatedAt": iso_ms(row.updated_at),
        "allowedActions": allowed_actions(
            actor, Status(row.status), rating_open=record.rating_open
        ),
        "rating": _rating(row),
        "device": _device(row),
    }


def _rating(row: Any) -> dict[str, Any] | None:
    """The customer's rating, or None before they rate."""
    if row.rating_score is None:
        return None
    return {
        "score": row.rating_score,
        "comment": row.rating_comment,
        "ratedAt": iso_ms(row.rated_at),
    }


def _device(row: Any) -> dict[str, Any] | None:
    """The device context the request was opened with; ``None`` when none was sent."""
    if row.device_platform is None:
        return None
    return {
        "platform": row.device_platform,
        "osVersion": row.device_os_version,
        "appVersion": row.device_app_version,
        "appBuild": row.device_app_build,
        "deviceModel": row.device_model,
        "locale": row.device_locale,
        "timeZone": row.device_time_zone,
    }


def mobile_summary(record: RequestRecord) -> dict[str, Any]:
    """A list item for the customer: no admin UUID anywhere."""
    row = record.row
    summary = _summary(record, Actor.CUSTOMER)
    summary["unreadCount"] = row.unread_count
    summary["lastReadMessageId"] = row.customer_last_read_message_id
    return summary


def mobile_detail(record: RequestRecord) -> dict[str, Any]:
    """The customer's detail with the thread, oldest first."""
    detail = mobile_summary(record)
    detail["messages"] = _messages(record, Actor.CUSTOMER)
    return detail


def admin_summary(record: RequestRecord) -> dict[str, Any]:
    """A queue item: the mobile summary plus assignee and customer."""
    row = record.row
    summary = _summary(record, Actor.ADMIN)
    summary["assignedAdminId"] = row.assigned_admin_id
    summary["customer"] = {
        "id": row.customer_id,
        "name": row.customer_name,
        "image": row.customer_image,
    }
    summary["customerLastReadMessageId"] = row.customer_last_read_message_id
    summary["tags"] = list(row.tags or ())
    return summary


def admin_detail(record: RequestRecord) -> dict[str, Any]:
    """The admin's detail: every message with its author's id."""
    detail = admin_summary(record)
    detail["messages"] = _messages(record, Actor.ADMIN)
    return detail


def _messages(record: RequestRecord, viewer: Actor) -> list[dict[str, Any]]:
    """The thread, oldest first; staff also see each author's id (never shown on mobile) and
    the internal notes, marked (never shown on mobile either)."""
    staff = viewer is Actor.ADMIN
    messages = []
    for m in record.messages:
        if m.internal and not staff:
            continue
        message = {
            "id": m.id,
            "authorType": m.author_type,
            "authorName": m.author_name,
            "authorImage": m.author_image,
            "body": m.body,
            "attachments": attachments_of(record, m.id, viewer),
            "createdAt": iso_ms(m.created_at),
        }
        if staff:
            message["authorId"] = m.author_id
            message["internal"] = m.internal
        messages.append(message)
    return messages


# Where each side uploads and downloads attachments.
ATTACHMENT_PATHS = {
    Actor.CUSTOMER: "/api/mobile/attachments",
    Actor.ADMIN: "/api/admin/attachments",
}
_NO_ATTACHMENTS: list[Any] = []


def attachments_of(record: RequestRecord, message_id: int, viewer: Actor) -> list[dict[str, Any]]:
    """The files on message ``message_id`` of ``record``'s thread, as ``viewer`` sees them."""
    return [
        attachment_entry(a, viewer) for a in record.attachments.get(message_id, _NO_ATTACHMENTS)
    ]


def attachment_entry(attachment: Any, viewer: Actor) -> dict[str, Any]:
    """A file on a message, with the urls ``viewer`` downloads it from (none once removed)."""
    url = None if attachment.removed else f"{ATTACHMENT_PATHS[viewer]}/{attachment.id}"
    return {
        "id": attachment.id,
        "fileName": attachment.file_name,
        "contentType": attachment.content_type,
        "size": attachment.size,
        "width": attachment.width,
        "height": attachment.height,
        "url": url,
        "thumbnailUrl": f"{url}/thumbnail" if url and attachment.has_thumbnail else None,
        "removed": attachment.removed,
    }
