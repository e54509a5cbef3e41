"""an index of each endpoint's pending deliveries by due time

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 20:00:00.000000

The workers' claim walks each endpoint's due deliveries, as many as the endpoint has free
slots. It used to walk the due deliveries of all endpoints together and look at the first
4 x concurrency: an endpoint at its limit with that many queued ahead of another's held the
other's back until its queue shrank. Partial, as the other delivery indexes: a delivery
leaves it when it succeeds or fails. Expand only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        "ix_webhook_deliveries_endpoint_due",
        "webhook_deliveries",
        ["endpoint_id", "next_attempt_at", "id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_webhook_deliveries_endpoint_due", table_name="webhook_deliveries")
