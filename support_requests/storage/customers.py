"""A customer's data as a data subject asks for it: export everything held, or erase it.

Erasure runs in one transaction. For every request of the customer (``customer_id``):
the customer's name and picture, the device context and the rating's comment become
null; the subject, every message body of the thread (staff replies and internal notes
quote the customer) and a resolution note become ``[erased]``; the customer's messages
lose their author's name and picture. Every attachment of those requests, and the
customer's uploads not attached yet, loses its bytes (chunks or file), thumbnail and name
(``[erased]``) and is kept as removed (``removed_by`` ``erasure``, unless staff removed it
before). The customer's push devices, stored idempotent answers and webhook events (their
deliveries cascade, so a pending one never sends erased text) are deleted. Status,
category, assignment, tags, scores and times stay: statistics do not move. Each request
something was erased from gets both versions bumped (every ETag changes) and one
``erased`` event with no changes. On PostgreSQL the customer's request rows are locked
first, so a reply at the same moment lands wholly before (and is erased) or after (and
stays); SQLite runs one write transaction at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    insert,
    literal,
    or_,
    select,
    update,
)

from support_requests.domain.clock import iso_ms, now_ms
from support_requests.domain.errors import NotFound
from support_requests.domain.principal import Principal
from support_requests.storage.attachments import AttachmentStore
from support_requests.storage.database import Database
from support_requests.storage.devices import shown as devices_shown
from support_requests.storage.models import (
    Attachment,
    AttachmentChunk,
    Device,
    IdempotencyRecord,
    Message,
    RequestEvent,
    SupportRequest,
    WebhookEvent,
)

ERASED: Final = "[erased]"
ERASED_EVENT: Final = "erased"
# Who erased an attachment, as ``removed_by`` shows it.
REMOVED_BY_ERASURE: Final = "erasure"
EXPORT_FORMAT: Final = "support-requests.customer-export/1"

_requests = cast(Table, SupportRequest.__table__)
_messages = cast(Table, Message.__table__)
_attachments = cast(Table, Attachment.__table__)
_chunks = cast(Table, AttachmentChunk.__table__)
_devices = cast(Table, Device.__table__)
_idempotency = cast(Table, IdempotencyRecord.__table__)
_webhook_events = cast(Table, WebhookEvent.__table__)
_events = cast(Table, RequestEvent.__table__)
_r, _m, _a = _requests.c, _messages.c, _attachments.c

_DEVICE_COLUMNS = (
    "device_platform",
    "device_os_version",
    "device_app_version",
    "device_app_build",
    "device_model",
    "device_locale",
    "device_time_zone",
)
_OF_CUSTOMER = _r.customer_id == bindparam("customer_id")

_LOCK_REQUESTS = select(*_requests.c).where(_OF_CUSTOMER).order_by(_r.id).with_for_update()
_MESSAGES = (
    select(*_messages.c)
    .where(_m.request_id.in_(select(_r.id).where(_OF_CUSTOMER)))
    .order_by(_m.request_id, _m.id)
)
_ATTACHMENT_COLUMNS = [column for column in _attachments.c if column.name != "thumbnail"]
_REQUEST_ATTACHMENTS = (
    select(*_ATTACHMENT_COLUMNS)
    .where(_a.request_id.in_(select(_r.id).where(_OF_CUSTOMER)))
    .order_by(_a.message_id, _a.position, _a.id)
)
_OWN_UPLOADS = and_(
    _a.request_id.is_(None),
    _a.owner_role == "customer",
    _a.owner_id == bindparam("customer_id"),
)
_UPLOADS = select(*_ATTACHMENT_COLUMNS).where(_OWN_UPLOADS).order_by(_a.created_at, _a.id)
_DEVICES = (
    select(*_devices.c)
    .where(_devices.c.customer_id == bindparam("customer_id"))
    .order_by(_devices.c.registered_at.desc(), _devices.c.id.desc())
)

# What erasure still has to do, so that erasing twice changes nothing the second time.
_UNERASED_ATTACHMENTS = (
    select(_a.id, _a.request_id, _a.storage_path)
    .where(
        or_(_a.request_id.in_(select(_r.id).where(_OF_CUSTOMER)), _OWN_UPLOADS),
        or_(_a.removed_at.is_(None), _a.file_name != ERASED),
    )
    .order_by(_a.id)
    .with_for_update()
)
_DELETE_CHUNKS = delete(_chunks).where(_chunks.c.attachment_id == bindparam("attachment_id"))
_ERASE_ATTACHMENT = (
    update(_attachments)
    .where(_a.id == bindparam("attachment_id"))
    .values(
        file_name=ERASED,
        thumbnail=None,
        thumbnail_content_type=None,
        storage_path=None,
        removed_at=case((_a.removed_at.is_(None), bindparam("at")), else_=_a.removed_at),
        removed_by=case((_a.removed_at.is_(None), REMOVED_BY_ERASURE), else_=_a.removed_by),
    )
)
_IS_CUSTOMERS = _m.author_type == "customer"
_ERASE_MESSAGES = (
    update(_messages)
    .where(
        _m.request_id.in_(select(_r.id).where(_OF_CUSTOMER)),
        or_(
            _m.body != ERASED,
            and_(_IS_CUSTOMERS, or_(_m.author_name.is_not(None), _m.author_image.is_not(None))),
        ),
    )
    .values(
        body=ERASED,
        author_name=case((_IS_CUSTOMERS, literal(None)), else_=_m.author_name),
        author_image=case((_IS_CUSTOMERS, literal(None)), else_=_m.author_image),
    )
    .returning(_m.request_id)
)
_ERASE_REQUEST = (
    update(_requests)
    .where(_r.id == bindparam("request_id"))
    .values(
        customer_name=None,
        customer_image=None,
        subject=ERASED,
        resolution_note=case((_r.resolution_note.is_(None), literal(None)), else_=ERASED),
        rating_comment=None,
        version=_r.version + 1,
        customer_version=_r.customer_version + 1,
        **dict.fromkeys(_DEVICE_COLUMNS),
    )
)
_INSERT_EVENT = insert(_events)
_DELETE_DEVICES = delete(_devices).where(_devices.c.customer_id == bindparam("customer_id"))
_DELETE_IDEMPOTENCY = delete(_idempotency).where(_idempotency.c.owner == bindparam("customer_id"))
_DELETE_WEBHOOK_EVENTS = delete(_webhook_events).where(
    _webhook_events.c.customer_id == bindparam("customer_id")
)


@dataclass(frozen=True)
class Erasure:
    """What one erasure did: how many requests, messages and attachments something was
    erased from, and how many devices were deleted."""

    customer_id: str
    requests: int
    messages: int
    attachments: int
    devices: int
    erased_at: datetime

    def document(self) -> dict[str, Any]:
        """As the API and ``supportctl customers erase --json`` show it."""
        return {
            "customerId": self.customer_id,
            "requests": self.requests,
            "messages": self.messages,
            "attachments": self.attachments,
            "devices": self.devices,
            "erasedAt": iso_ms(self.erased_at),
        }


def _not_found(customer_id: str) -> NotFound:
    return NotFound(f"Customer {customer_id} was not found.")


def _request_has_personal_data(row: Any) -> bool:
    """Whether the request's own row still holds something erasure blanks."""
    return (
        row.customer_name is not None
        or row.customer_image is not None
        or row.subject != ERASED
        or (row.resolution_note is not None and row.resolution_note != ERASED)
        or row.rating_comment is not None
        or any(getattr(row, name) is not None for name in _DEVICE_COLUMNS)
    )


class CustomerData:
    """A customer's data: ``export`` it as a document, or ``erase`` it."""

    def __init__(
        self,
        database: Database,
        attachments: AttachmentStore,
        clock: Callable[[], datetime] = now_ms,
    ) -> None:
        self.database = database
        self.attachments = attachments
        self.clock = clock

    async def erase(self, actor: Principal, customer_id: str) -> Erasure:
        """Erase the customer's personal data in one transaction (see the module's
        docstring); ``actor`` is recorded in each request's ``erased`` event. A customer
        with no request, device nor upload is ``NotFound``."""
        at = self.clock()
        customer = {"customer_id": customer_id}
        files: list[str] = []
        async with self.database.writing() as connection:
            requests = (await connection.execute(_LOCK_REQUESTS, customer)).all()
            touched = {row.id for row in requests if _request_has_personal_data(row)}
            erased_messages = (await connection.execute(_ERASE_MESSAGES, customer)).all()
            touched.update(row.request_id for row in erased_messages)
            attachments = (await connection.execute(_UNERASED_ATTACHMENTS, customer)).all()
            if attachments:
                ids = [{"attachment_id": row.id} for row in attachments]
                await connection.execute(_DELETE_CHUNKS, ids)
                await connection.execute(_ERASE_ATTACHMENT, [{**one, "at": at} for one in ids])
                touched.update(row.request_id for row in attachments if row.request_id)
                files = [row.storage_path for row in attachments if row.storage_path]
            devices = (await connection.execute(_DELETE_DEVICES, customer)).rowcount
            if not requests and not devices and not await self._has_uploads(connection, customer):
                raise _not_found(customer_id)
            if touched:
                ordered = sorted(touched)
                await connection.execute(_ERASE_REQUEST, [{"request_id": i} for i in ordered])
                await connection.execute(
                    _INSERT_EVENT,
                    [
                        {
                            "request_id": request_id,
                            "type": ERASED_EVENT,
                            "actor_type": actor.role.value,
                            "actor_id": actor.sub,
                            "at": at,
                            "changes": {},
                        }
                        for request_id in ordered
                    ],
                )
            await connection.execute(_DELETE_IDEMPOTENCY, customer)
            await connection.execute(_DELETE_WEBHOOK_EVENTS, customer)
        # After the commit, as staff removal does: a file left by a crash here is one
        # nothing points to any more.
        await self.attachments.delete_files(files)
        return Erasure(
            customer_id=customer_id,
            requests=len(touched),
            messages=len(erased_messages),
            attachments=len(attachments),
            devices=devices,
            erased_at=at,
        )

    @staticmethod
    async def _has_uploads(connection: Any, customer: dict[str, Any]) -> bool:
        return (await connection.execute(_UPLOADS, customer)).first() is not None

    async def export(self, customer_id: str) -> dict[str, Any]:
        """Everything held about the customer as a JSON-ready document: their requests
        with every message (internal notes too, marked ``internal``) and the attachments'
        metadata, their uploads not attached yet, and their push devices. ``NotFound``
        for a customer the service holds nothing of."""
        customer = {"customer_id": customer_id}
        exported_at = self.clock()
        # One transaction with the customer's request rows locked (as every write to a
        # request locks its row), so no reply or change lands between the reads.
        async with self.database.writing() as connection:
            requests = (await connection.execute(_LOCK_REQUESTS, customer)).all()
            messages = (await connection.execute(_MESSAGES, customer)).all()
            attached = (await connection.execute(_REQUEST_ATTACHMENTS, customer)).all()
            uploads = (await connection.execute(_UPLOADS, customer)).all()
            devices = (await connection.execute(_DEVICES, customer)).all()
        if not requests and not uploads and not devices:
            raise _not_found(customer_id)
        by_message: dict[int, list[dict[str, Any]]] = {}
        for row in attached:
            by_message.setdefault(row.message_id, []).append(_attachment(row))
        by_request: dict[int, list[dict[str, Any]]] = {}
        for row in messages:
            by_request.setdefault(row.request_id, []).append(
                {
                    "id": row.id,
                    "authorType": row.author_type,
                    "authorName": row.author_name,
                    "body": row.body,
                    "createdAt": iso_ms(row.created_at),
                    "internal": bool(row.internal),
                    "attachments": by_message.get(row.id, []),
                }
            )
        return {
            "format": EXPORT_FORMAT,
            "customerId": customer_id,
            "exportedAt": iso_ms(exported_at),
            "requests": [_request(row, by_request.get(row.id, [])) for row in requests],
            "uploads": [_attachment(row) for row in uploads],
            "devices": [devices_shown(row) for row in devices],
        }


def _request(row: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    device = {
        "platform": row.device_platform,
        "osVersion": row.device_os_version,
        "appVersion": row.device_app_version,
        "appBuild": row.device_app_build,
        "model": row.device_model,
        "locale": row.device_locale,
        "timeZone": row.device_time_zone,
    }
    rating = None
    if row.rating_score is not None:
        rating = {
            "score": row.rating_score,
            "comment": row.rating_comment,
            "ratedAt": iso_ms(row.rated_at),
        }
    return {
        "id": row.id,
        "customerName": row.customer_name,
        "customerImage": row.customer_image,
        "category": row.category,
        "subject": row.subject,
        "status": row.status,
        "resolutionNote": row.resolution_note,
        "createdAt": iso_ms(row.created_at),
        "updatedAt": iso_ms(row.updated_at),
        "resolvedAt": iso_ms(row.resolved_at),
        "closedAt": iso_ms(row.closed_at),
        "device": device if any(value is not None for value in device.values()) else None,
        "rating": rating,
        "messages": messages,
    }


def _attachment(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "fileName": row.file_name,
        "contentType": row.content_type,
        "size": row.size,
        "width": row.width,
        "height": row.height,
        "createdAt": iso_ms(row.created_at),
        "removed": row.removed_at is not None,
    }
