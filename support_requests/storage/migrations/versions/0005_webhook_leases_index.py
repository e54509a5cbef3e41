"""an index of the deliveries under a lease

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 13:30:00.000000

The workers' claim counts each endpoint's deliveries under a live lease; without this
index that count read every pending delivery (1.2 ms at 15,000 pending, growing with the
backlog). Partial: a delivery is in it only while claimed, so inserting one (the API's
write path) does not touch it. Expand only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEASED = sa.text("status = 'pending' AND claimed_until IS NOT NULL")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        "ix_webhook_deliveries_leased",
        "webhook_deliveries",
        ["endpoint_id", "claimed_until"],
        postgresql_where=_LEASED,
        sqlite_where=_LEASED,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_webhook_deliveries_leased", table_name="webhook_deliveries")
