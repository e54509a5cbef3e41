"""conversation: read state, device context, ratings, internal notes, tags

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 07:20:00.000000

Every new column is nullable or has a default, so an older server keeps working while
this runs (expand only). Existing rows are filled in as if the features had always been
there: each request's read marker is its customer's latest message (a customer has read
what came before their own reply), its unread count the staff messages after that, its
first response its first staff message, its last resolution its ``resolved_at``; each
customer's badge is the sum of their requests'.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_RATED = sa.text("rating_score IS NOT NULL")


def _new_request_columns() -> tuple[sa.Column[object], ...]:
    """New columns of support_requests (fresh objects each call: a Column joins one table)."""
    return (
        sa.Column("customer_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("device_platform", sa.String(length=16), nullable=True),
        sa.Column("device_os_version", sa.String(length=32), nullable=True),
        sa.Column("device_app_version", sa.String(length=32), nullable=True),
        sa.Column("device_app_build", sa.String(length=32), nullable=True),
        sa.Column("device_model", sa.String(length=64), nullable=True),
        sa.Column("device_locale", sa.String(length=35), nullable=True),
        sa.Column("device_time_zone", sa.String(length=64), nullable=True),
        sa.Column("customer_last_read_message_id", _ID, nullable=True),
        sa.Column("unread_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("first_response_at", sa.DateTime(), nullable=True),
        sa.Column("last_resolved_at", sa.DateTime(), nullable=True),
        sa.Column("rating_score", sa.Integer(), nullable=True),
        sa.Column("rating_comment", sa.Text(), nullable=True),
        sa.Column("rated_at", sa.DateTime(), nullable=True),
        sa.Column("tags", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
    )


_NEW_REQUEST_INDEXES: tuple[tuple[str, list[str], dict[str, Any]], ...] = (
    ("ix_support_requests_platform_created", ["device_platform", "created_at", "id"], {}),
    ("ix_support_requests_app_version_created", ["device_app_version", "created_at", "id"], {}),
    (
        "ix_support_requests_rated_created",
        ["created_at", "id"],
        {"postgresql_where": _RATED, "sqlite_where": _RATED},
    ),
    ("ix_support_requests_last_resolved", ["last_resolved_at"], {}),
    ("ix_support_requests_closed", ["closed_at"], {}),
    ("ix_support_requests_rated_at", ["rated_at"], {}),
)

_BACKFILL = (
    "UPDATE support_requests SET customer_version = version",
    """UPDATE support_requests SET customer_last_read_message_id = (
        SELECT max(m.id) FROM messages m
        WHERE m.request_id = support_requests.id AND m.author_type = 'customer')""",
    """UPDATE support_requests SET
        unread_count = (
            SELECT count(*) FROM messages m
            WHERE m.request_id = support_requests.id AND m.author_type = 'admin'
              AND m.id > coalesce(support_requests.customer_last_read_message_id, 0)),
        first_response_at = (
            SELECT min(m.created_at) FROM messages m
            WHERE m.request_id = support_requests.id AND m.author_type = 'admin'),
        last_resolved_at = resolved_at""",
    """INSERT INTO customer_inboxes (customer_id, unread_count, requests_with_unread)
        SELECT customer_id, sum(unread_count), count(*) FROM support_requests
        WHERE unread_count > 0 GROUP BY customer_id""",
)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("support_requests", schema=None) as batch_op:
        for column in _new_request_columns():
            batch_op.add_column(column)
        for name, columns, options in _NEW_REQUEST_INDEXES:
            batch_op.create_index(name, columns, unique=False, **options)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("internal", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "request_tags",
        sa.Column("request_id", _ID, nullable=False),
        sa.Column("tag", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["support_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("request_id", "tag"),
    )
    op.create_index(
        "ix_request_tags_tag_created", "request_tags", ["tag", "created_at", "request_id"]
    )
    op.create_table(
        "customer_inboxes",
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("unread_count", sa.Integer(), nullable=False),
        sa.Column("requests_with_unread", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    for statement in _BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("customer_inboxes")
    op.drop_index("ix_request_tags_tag_created", table_name="request_tags")
    op.drop_table("request_tags")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("internal")
    with op.batch_alter_table("support_requests", schema=None) as batch_op:
        for name, _columns, _options in reversed(_NEW_REQUEST_INDEXES):
            batch_op.drop_index(name)
        for column in reversed(_new_request_columns()):
            batch_op.drop_column(column.name)
