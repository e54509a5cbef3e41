"""attachments

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 05:00:00.000000

Two new tables, and ``support_requests.attachment_count`` (0 for every existing row).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("support_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attachment_count", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(length=22), nullable=False),
        sa.Column("owner_id", sa.String(length=255), nullable=False),
        sa.Column("owner_role", sa.String(length=16), nullable=False),
        sa.Column("request_id", _ID, nullable=True),
        sa.Column("message_id", _ID, nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("thumbnail", sa.LargeBinary(), nullable=True),
        sa.Column("thumbnail_content_type", sa.String(length=64), nullable=True),
        sa.Column("storage_path", sa.String(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
        sa.Column("removed_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["request_id"], ["support_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.create_index("ix_attachments_expires", ["expires_at"], unique=False)
        batch_op.create_index("ix_attachments_message", ["message_id", "position"], unique=False)
        batch_op.create_index(
            "ix_attachments_owner", ["owner_role", "owner_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_attachments_request", ["request_id", "message_id", "position"], unique=False
        )

    op.create_table(
        "attachment_chunks",
        sa.Column("attachment_id", sa.String(length=22), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["attachment_id"], ["attachments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("attachment_id", "seq"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("attachment_chunks")
    with op.batch_alter_table("attachments", schema=None) as batch_op:
        batch_op.drop_index("ix_attachments_request")
        batch_op.drop_index("ix_attachments_owner")
        batch_op.drop_index("ix_attachments_message")
        batch_op.drop_index("ix_attachments_expires")

    op.drop_table("attachments")
    with op.batch_alter_table("support_requests", schema=None) as batch_op:
        batch_op.drop_column("attachment_count")
