"""event stream sequence

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 14:30:00.000000

An event gets its place in the Subscribe stream (``stream_seq``) in a short transaction after
the one that wrote it commits, instead of the writing transaction holding a global lock from
its event to its commit. Events written before keep their order: their place is their ``seq``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("notify_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stream_seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE notify_events SET stream_seq = seq")
    with op.batch_alter_table("notify_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notify_events_stream_seq"), ["stream_seq"], unique=True
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("notify_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notify_events_stream_seq"))
        batch_op.drop_column("stream_seq")
