"""outbox traceparent and undelivered-rows index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:00:00.000000

Each outbox row keeps the W3C traceparent of the call or job that wrote it, so its delivery
joins that trace (NULL for rows written before, or with tracing off). The partial index holds
only the undelivered rows: the relay's claim and the backlog gauges read them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNDELIVERED = sa.text("delivered_at IS NULL")


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("inventory_outbox", sa.Column("traceparent", sa.String(length=55), nullable=True))
    op.create_index(
        "ix_inventory_outbox_undelivered",
        "inventory_outbox",
        ["seq"],
        unique=False,
        postgresql_where=UNDELIVERED,
        sqlite_where=UNDELIVERED,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_inventory_outbox_undelivered", table_name="inventory_outbox")
    with op.batch_alter_table("inventory_outbox", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
