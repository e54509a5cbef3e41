"""The webhook events of a change, built from what its write already holds.

Pure functions: storage calls them inside the change's own transaction (the outbox,
``storage/outbox.py``) with the lifecycle's plan (its recorded entries say what changed),
the request as the write read it back, and the message it added, and stores what they
return. Nothing here reads the database or decides a rule; each function builds only the
events some endpoint takes (``Subscribers.take``), so a change nobody listens to pays for
no payload.

Every event's ``data`` has ``requestId`` and ``customerId``; then, by type:

- ``support_request.created``: ``request``, the admin view of the request exactly as
  ``GET /api/admin/support-requests/{id}`` answers it (the first message included, so no
  ``message_created`` comes for it). That view is ``support_requests.views.admin_detail``:
  it lives outside ``handlers/`` so that storage need not import the HTTP layer (which
  imports storage) and both show the same function's output, not two copies of it.
- ``support_request.message_created``: ``message`` (``id``, ``authorType``, ``body``,
  ``createdAt``, ``attachments`` as staff see them), for public messages only.
- ``support_request.status_changed``, ``support_request.assigned``: ``from``, ``to``.
- ``support_request.rated``: ``score``.
- ``support_request.attachment_removed``: ``messageId``, ``attachmentId``, ``removedBy``.
- ``notification.push``: ``devices`` and ``notification`` (``title``, ``body``,
  ``requestId``, ``badge``), on a public staff reply to a customer with devices; the
  only event that carries push tokens.

A change that moves several things yields one event per change, in ``EVENT_TYPES``'
order (a first staff reply: ``message_created``, ``status_changed``, ``assigned``, then
the push).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from support_requests.domain.clock import iso_ms
from support_requests.domain.lifecycle import Actor, Plan, Recorded
from support_requests.domain.webhooks import (
    ASSIGNED,
    ATTACHMENT_REMOVED,
    CREATED,
    EVENT_TYPES,
    MESSAGE_CREATED,
    PUSH,
    RATED,
    STATUS_CHANGED,
)
from support_requests.storage.outbox import Event, Subscribers
from support_requests.views import admin_detail, attachments_of

if TYPE_CHECKING:  # storage calls this module: a type only, no import cycle
    from support_requests.storage.support_desk import RequestRecord

# The webhook event each of the lifecycle's history entries yields; the others (a note, the
# tags, an internal note) yield none.
EVENT_OF_ENTRY = {
    "created": CREATED,
    "customer_replied": MESSAGE_CREATED,
    "admin_replied": MESSAGE_CREATED,
    "status_changed": STATUS_CHANGED,
    "assignment_changed": ASSIGNED,
    "rated": RATED,
}
# A push's body: the reply's first characters.
PUSH_BODY_CHARACTERS = 120
_ORDER = {event_type: position for position, event_type in enumerate(EVENT_TYPES)}


def types_of(plan: Plan) -> set[str]:
    """The event types ``plan``'s change yields, before anyone asks who takes them."""
    return {EVENT_OF_ENTRY[entry.type] for entry in plan.events if entry.type in EVENT_OF_ENTRY}


def of_change(
    plan: Plan,
    record: RequestRecord,
    subscribers: Subscribers,
    *,
    message_id: int | None = None,
) -> list[Event]:
    """The events of the change ``plan`` made to ``record`` (as read back after it, with
    the message ``message_id`` it added if any) that some endpoint takes, in order."""
    events = [
        _event_of(entry, event_type, record, message_id)
        for entry in plan.events
        if (event_type := EVENT_OF_ENTRY.get(entry.type)) and subscribers.take(event_type)
    ]
    return sorted(events, key=lambda event: _ORDER[event.type])


def push(record: RequestRecord, message_id: int, devices: Sequence[Any], badge: int) -> Event:
    """``notification.push`` for the staff reply ``message_id``: the customer's ``devices``
    (rows with ``id``, ``platform``, ``token``, ``app_id``), and their unread total
    ``badge`` after the reply."""
    row = record.row
    message = _message(record, message_id)
    return _request_event(
        PUSH,
        row,
        devices=[
            {
                "id": device.id,
                "platform": device.platform,
                "token": device.token,
                "appId": device.app_id,
            }
            for device in devices
        ],
        notification={
            "title": f"New reply to “{row.subject}”",
            "body": message.body[:PUSH_BODY_CHARACTERS],
            "requestId": row.id,
            "badge": badge,
        },
    )


def attachment_removed(
    *, request_id: int, customer_id: str, message_id: int, attachment_id: str, removed_by: str
) -> Event:
    """``support_request.attachment_removed``: staff (``removed_by``, an admin UUID) removed
    the bytes of ``attachment_id``, a file on the public message ``message_id``."""
    data = {
        "requestId": request_id,
        "customerId": customer_id,
        "messageId": message_id,
        "attachmentId": attachment_id,
        "removedBy": removed_by,
    }
    return Event(ATTACHMENT_REMOVED, data, request_id, customer_id)


def _event_of(
    entry: Recorded, event_type: str, record: RequestRecord, message_id: int | None
) -> Event:
    row = record.row
    if event_type == CREATED:
        return _request_event(CREATED, row, request=admin_detail(record))
    if event_type == MESSAGE_CREATED:
        assert message_id is not None  # a reply's plan comes with the message it added
        return _request_event(MESSAGE_CREATED, row, message=_message_data(record, message_id))
    changes = entry.stored()
    if event_type == STATUS_CHANGED:
        return _request_event(STATUS_CHANGED, row, **changes["status"])
    if event_type == ASSIGNED:
        return _request_event(ASSIGNED, row, **changes["assignedAdminId"])
    return _request_event(RATED, row, score=changes["score"]["to"])


def _request_event(event_type: str, row: Any, **data: Any) -> Event:
    return Event(
        event_type,
        {"requestId": row.id, "customerId": row.customer_id, **data},
        row.id,
        row.customer_id,
    )


def _message(record: RequestRecord, message_id: int) -> Any:
    return next(message for message in record.messages if message.id == message_id)


def _message_data(record: RequestRecord, message_id: int) -> dict[str, Any]:
    message = _message(record, message_id)
    return {
        "id": message.id,
        "authorType": message.author_type,
        "body": message.body,
        "createdAt": iso_ms(message.created_at),
        "attachments": attachments_of(record, message.id, Actor.ADMIN),
    }
