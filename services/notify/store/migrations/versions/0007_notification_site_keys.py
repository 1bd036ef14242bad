"""notification site keys

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 17:00:00.000000

A notification's sites as text (" s1 s2 ", "" when it concerns none) beside the JSON list, so a
site-limited caller's ListNotifications leaves out, in the query, notifications about only other
sites (docs/security.md, "Scope"). Existing rows get theirs from their JSON list.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("notify_notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("site_keys", sa.Text(), server_default="", nullable=False))
    notifications = sa.table(
        "notify_notifications",
        sa.column("id", sa.String()),
        sa.column("site_ids", sa.JSON()),
        sa.column("site_keys", sa.Text()),
    )
    connection = op.get_bind()
    after = ""
    while True:
        rows = connection.execute(
            sa.select(notifications.c.id, notifications.c.site_ids)
            .where(notifications.c.id > after)
            .order_by(notifications.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        for row in rows:
            if row.site_ids:
                connection.execute(
                    notifications.update()
                    .where(notifications.c.id == row.id)
                    .values(site_keys=f" {' '.join(row.site_ids)} ")
                )
        after = rows[-1].id


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("notify_notifications", schema=None) as batch_op:
        batch_op.drop_column("site_keys")
