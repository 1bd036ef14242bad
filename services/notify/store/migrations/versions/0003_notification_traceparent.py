"""notification traceparent

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:00:00.000000

A notification keeps the W3C traceparent of the Publish call that accepted it, so the
dispatcher's sends join that trace (NULL for notifications accepted before, or with tracing
off).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        "notify_notifications", sa.Column("traceparent", sa.String(length=55), nullable=True)
    )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("notify_notifications", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
