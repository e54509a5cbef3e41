"""Tables of the service, as typed SQLAlchemy declarative models.

Times are naive UTC with millisecond precision, the precision the API shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    event,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of every table."""


class SupportRequest(Base):
    """A customer's support request; its thread lives in ``messages``."""

    __tablename__ = "support_requests"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(String(255))
    customer_name: Mapped[str | None] = mapped_column(String(255))
    customer_image: Mapped[str | None] = mapped_column(String(2048))
    category: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(150))
    status: Mapped[str] = mapped_column(String(16))
    assigned_admin_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("admins.id"))
    resolution_note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_customer_message_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_admin_message_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    # Bumped by every change; the request's thread and metadata are a function of it.
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Attachments its messages took (removed ones too): a detail read looks for them only
    # when there are some. An integer, as SQLite reads it with no conversion per row.
    attachment_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Bumped by every change the customer sees (not by internal notes nor tags): the mobile
    # views and their ETags are a function of it.
    customer_version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    # The device and app the request was opened from (all null when not sent).
    device_platform: Mapped[str | None] = mapped_column(String(16))
    device_os_version: Mapped[str | None] = mapped_column(String(32))
    device_app_version: Mapped[str | None] = mapped_column(String(32))
    device_app_build: Mapped[str | None] = mapped_column(String(32))
    device_model: Mapped[str | None] = mapped_column(String(64))
    device_locale: Mapped[str | None] = mapped_column(String(35))
    device_time_zone: Mapped[str | None] = mapped_column(String(64))
    # The customer's read marker, and the public staff messages after it (kept in the
    # transaction that writes a message or moves the marker).
    customer_last_read_message_id: Mapped[int | None] = mapped_column(Id)
    unread_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # The first public staff message's time (statistics: first response).
    first_response_at: Mapped[datetime | None] = mapped_column(DateTime)
    # When the request last became resolved; kept when it closes, cleared when it reopens.
    # A rating's 14 days run from it (or from closed_at when it was closed unresolved).
    last_resolved_at: Mapped[datetime | None] = mapped_column(DateTime)
    rating_score: Mapped[int | None] = mapped_column(Integer)
    rating_comment: Mapped[str | None] = mapped_column(Text)
    rated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The tags as shown (sorted); request_tags holds them one row each for the queue filter.
    tags: Mapped[list[str]] = mapped_column(JSON, server_default=text("'[]'"))

    __table_args__ = (
        Index("ix_support_requests_customer_created", "customer_id", "created_at", "id"),
        Index("ix_support_requests_created", "created_at", "id"),
        Index("ix_support_requests_updated", "updated_at", "id"),
        Index("ix_support_requests_status_created", "status", "created_at", "id"),
        Index("ix_support_requests_assignee_created", "assigned_admin_id", "created_at", "id"),
        Index("ix_support_requests_platform_created", "device_platform", "created_at", "id"),
        Index("ix_support_requests_app_version_created", "device_app_version", "created_at", "id"),
        # Rated requests only: the queue's `rated=true` and `maxScore` walk it newest first.
        Index(
            "ix_support_requests_rated_created",
            "created_at",
            "id",
            postgresql_where=text("rating_score IS NOT NULL"),
            sqlite_where=text("rating_score IS NOT NULL"),
        ),
        # Statistics read time windows of these.
        Index("ix_support_requests_last_resolved", "last_resolved_at"),
        Index("ix_support_requests_closed", "closed_at"),
        Index("ix_support_requests_rated_at", "rated_at"),
    )


class Message(Base):
    """One message of a thread, with its author as the token named them when written."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(
        Id, ForeignKey("support_requests.id", ondelete="CASCADE")
    )
    author_type: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[str] = mapped_column(String(255))
    author_name: Mapped[str | None] = mapped_column(String(255))
    author_image: Mapped[str | None] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    # A staff note on the request, never shown to the customer.
    internal: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (Index("ix_messages_request", "request_id", "id"),)


class RequestTag(Base):
    """One tag of a request, with the request's creation time so that the queue filtered by
    a tag walks ``ix_request_tags_tag_created`` newest first."""

    __tablename__ = "request_tags"

    request_id: Mapped[int] = mapped_column(
        Id, ForeignKey("support_requests.id", ondelete="CASCADE")
    )
    tag: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (
        PrimaryKeyConstraint("request_id", "tag"),
        Index("ix_request_tags_tag_created", "tag", "created_at", "request_id"),
    )


class CustomerInbox(Base):
    """A customer's badge: unread staff messages over all their requests, and how many
    requests have some; kept in the transaction that changes a request's unread count."""

    __tablename__ = "customer_inboxes"

    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    unread_count: Mapped[int] = mapped_column(Integer)
    requests_with_unread: Mapped[int] = mapped_column(Integer)


class Admin(Base):
    """A support admin the service has seen in a valid token."""

    __tablename__ = "admins"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    image: Mapped[str | None] = mapped_column(String(2048))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime)


class RequestEvent(Base):
    """One change to a request, written in the transaction that made it."""

    __tablename__ = "request_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(
        Id, ForeignKey("support_requests.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(32))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(DateTime)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_request_events_request", "request_id", "id"),)


class Attachment(Base):
    """An uploaded file: unattached (``expires_at`` set) until a message takes it.

    The bytes are in ``attachment_chunks``, or in a file named after ``id`` when the
    service stores them in a directory (``storage_path``). Removal by staff keeps the row
    (``removed_at``) so the message still lists the file, without its bytes.
    """

    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(22), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(255))
    owner_role: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("support_requests.id", ondelete="CASCADE")
    )
    message_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("messages.id", ondelete="CASCADE")
    )
    # Where it stands in its message's list, as the author listed the ids.
    position: Mapped[int | None] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary)
    thumbnail_content_type: Mapped[str | None] = mapped_column(String(64))
    storage_path: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime)
    removed_by: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_attachments_message", "message_id", "position"),
        Index("ix_attachments_expires", "expires_at"),
        Index("ix_attachments_owner", "owner_role", "owner_id", "created_at"),
        Index("ix_attachments_request", "request_id", "message_id", "position"),
    )


class AttachmentChunk(Base):
    """A piece of an attachment's bytes: 256 KiB each but the last, in ``seq`` order."""

    __tablename__ = "attachment_chunks"

    attachment_id: Mapped[str] = mapped_column(
        String(22), ForeignKey("attachments.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (PrimaryKeyConstraint("attachment_id", "seq"),)


class RateLimitCounter(Base):
    """No longer written: rate limits are counted in memory or Redis
    (``storage/rate_limits.py``). Kept so that an older server running during an upgrade
    keeps working; a later migration drops it."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(300))
    window_start: Mapped[datetime] = mapped_column(DateTime)
    count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (PrimaryKeyConstraint("key", "window_start"),)


class IdempotencyRecord(Base):
    """The first answer to a caller's ``Idempotency-Key``, replayed to its retries."""

    __tablename__ = "idempotency_records"

    owner: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    location: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (
        PrimaryKeyConstraint("owner", "key"),
        Index("ix_idempotency_records_created", "created_at"),
    )


class Device(Base):
    """A customer's push token (APNs or FCM): one row per token, moved to whoever registers
    it last. The token is looked up by its SHA-256 (a token may be 4 KiB, too long for an
    index entry); it is shown to its customer and to the app's backend in
    ``notification.push`` events only."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255))
    platform: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(Text)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    app_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    registered_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_devices_customer_registered", "customer_id", "registered_at"),)


class WebhookEndpoint(Base):
    """Where the service sends events: a URL, the event types it takes, and its signing
    secret (``whsec_…``, stored encrypted when ``SUPPORT_SECRET_KEY`` is set)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(512))
    enabled: Mapped[bool] = mapped_column(Boolean)
    # Why it was disabled (``gone``: the receiver answered 410), null while enabled.
    disabled_reason: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class WebhookEvent(Base):
    """One event as sent: ``body`` is the exact JSON every attempt signs and sends, so a
    retry carries the same bytes and the same ``webhook-id`` (``public_id``)."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    # No foreign key: an event outlives what it tells of (and erasure rewrites it).
    request_id: Mapped[int | None] = mapped_column(Id)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_webhook_events_customer", "customer_id", "id"),)


class WebhookDelivery(Base):
    """One event to one endpoint: ``pending`` until a 2xx (``succeeded``) or until its
    retries run out or the endpoint is gone (``failed``). A worker that takes it sets
    ``claimed_until``; one that dies leaves it to be taken again once that passes.
    ``order_key`` (the request's id) keeps one request's deliveries to an endpoint in order."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(Id, ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    order_key: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_response_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        # The workers' claim walks the pending ones by due time.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # The claim walks each endpoint's pending ones by due time, as many as it has slots.
        Index(
            "ix_webhook_deliveries_endpoint_due",
            "endpoint_id",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # Per-request order: is an earlier delivery of this request to this endpoint pending?
        Index(
            "ix_webhook_deliveries_order",
            "endpoint_id",
            "order_key",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # The claim's count of live leases per endpoint: only deliveries under a lease.
        Index(
            "ix_webhook_deliveries_leased",
            "endpoint_id",
            "claimed_until",
            postgresql_where=text("status = 'pending' AND claimed_until IS NOT NULL"),
            sqlite_where=text("status = 'pending' AND claimed_until IS NOT NULL"),
        ),
        # An endpoint's deliveries, newest first (the admin API's page).
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_event", "event_id"),
    )


# On PostgreSQL, a committed insert of deliveries wakes every worker that LISTENs on
# ``support_webhooks`` (a notification is sent at commit, never for a rollback).
NOTIFY_CHANNEL = "support_webhooks"
NOTIFY_WORKERS = (
    "CREATE OR REPLACE FUNCTION support_webhooks_notify() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('support_webhooks', ''); "
    "RETURN NULL; END $$",
    "CREATE TRIGGER webhook_deliveries_notify AFTER INSERT ON webhook_deliveries "
    "FOR EACH STATEMENT EXECUTE FUNCTION support_webhooks_notify()",
)
for _statement in NOTIFY_WORKERS:
    event.listen(
        WebhookDelivery.__table__,
        "after_create",
        DDL(_statement).execute_if(dialect="postgresql"),  # type: ignore[no-untyped-call]
    )
