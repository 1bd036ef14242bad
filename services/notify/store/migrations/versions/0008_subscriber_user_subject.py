"""subscriber user subject

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 07:00:00.000000

A subscriber may be a signed-in user's own (UpdateMyNotificationSettings makes it): the token's
subject, unique within the organisation, so one user has one subscriber and reaches no other.
NULL for every other subscriber (several NULLs never collide, on SQLite and PostgreSQL alike).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("notify_subscribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_subject", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(
            "uq_notify_subscribers_organisation_user", ["organisation_id", "user_subject"]
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("notify_subscribers", schema=None) as batch_op:
        batch_op.drop_constraint("uq_notify_subscribers_organisation_user", type_="unique")
        batch_op.drop_column("user_subject")
