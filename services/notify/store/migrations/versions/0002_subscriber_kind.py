"""subscriber kind

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 19:20:00.379095

Subscribers created before it become STAFF (what they were treated as); patient subscribers
must be set to PATIENT with UpdateSubscriber (docs/notify.md, "Recipients").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("notify_subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=8), server_default="STAFF", nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("notify_subscribers", schema=None) as batch_op:
        batch_op.drop_column("kind")
