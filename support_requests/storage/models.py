"""Tables of the service, as typed SQLAlchemy declarative models.

Times are naive UTC with millisecond precision, the precision the API shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
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

    __table_args__ = (
        Index("ix_support_requests_customer_created", "customer_id", "created_at", "id"),
        Index("ix_support_requests_created", "created_at", "id"),
        Index("ix_support_requests_updated", "updated_at", "id"),
        Index("ix_support_requests_status_created", "status", "created_at", "id"),
        Index("ix_support_requests_assignee_created", "assigned_admin_id", "created_at", "id"),
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

    __table_args__ = (Index("ix_messages_request", "request_id", "id"),)


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


class RateLimitCounter(Base):
    """Requests a caller made in one window (PostgreSQL; SQLite counts in the process)."""

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
