"""site schedule objective and plan habits

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 09:00:00.000000

PlanSchedule's objective is a site setting: ``sites.schedule_objective`` holds the weights a
site sets (JSON, name → points; NULL means every default). A plan may name the patient's usual
weekday, start and chair for the continuity terms: three nullable columns on
``therapy_plans`` (scheduling preferences, so not in the versioned specification).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("sites", sa.Column("schedule_objective", sa.JSON(), nullable=True))
    op.add_column("therapy_plans", sa.Column("usual_weekday", sa.Integer(), nullable=True))
    op.add_column("therapy_plans", sa.Column("usual_start_minute", sa.Integer(), nullable=True))
    op.add_column("therapy_plans", sa.Column("usual_chair_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("therapy_plans", schema=None) as batch_op:
        batch_op.drop_column("usual_chair_id")
        batch_op.drop_column("usual_start_minute")
        batch_op.drop_column("usual_weekday")
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("schedule_objective")
