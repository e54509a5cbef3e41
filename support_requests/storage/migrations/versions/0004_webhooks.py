"""push devices, webhook endpoints, the outbox of events and their deliveries

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 10:00:00.000000

New tables only (expand only): an older server keeps working while this runs. On
PostgreSQL a statement trigger on ``webhook_deliveries`` notifies the workers'
``LISTEN support_webhooks`` when deliveries are committed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_PENDING = sa.text("status = 'pending'")
# As written here, not imported: a migration keeps the statements of its day.
_NOTIFY_WORKERS = (
    "CREATE OR REPLACE FUNCTION support_webhooks_notify() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('support_webhooks', ''); "
    "RETURN NULL; END $$",
    "CREATE TRIGGER webhook_deliveries_notify AFTER INSERT ON webhook_deliveries "
    "FOR EACH STATEMENT EXECUTE FUNCTION support_webhooks_notify()",
)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_index("ix_devices_customer_registered", "devices", ["customer_id", "registered_at"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=512), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("public_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("request_id", _ID, nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("public_id"),
    )
    op.create_index("ix_webhook_events_customer", "webhook_events", ["customer_id", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("event_id", _ID, nullable=False),
        sa.Column("endpoint_id", sa.String(length=32), nullable=False),
        sa.Column("order_key", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_response_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["webhook_events.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at", "id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
    op.create_index(
        "ix_webhook_deliveries_order",
        "webhook_deliveries",
        ["endpoint_id", "order_key", "id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "id"])
    op.create_index("ix_webhook_deliveries_event", "webhook_deliveries", ["event_id"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in _NOTIFY_WORKERS:
            op.execute(statement)


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS webhook_deliveries_notify ON webhook_deliveries")
        op.execute("DROP FUNCTION IF EXISTS support_webhooks_notify()")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_events_customer", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_devices_customer_registered", table_name="devices")
    op.drop_table("devices")
