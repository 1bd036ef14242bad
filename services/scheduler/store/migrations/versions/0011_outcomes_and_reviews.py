"""outcome records and review decisions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 16:00:00.000000

Response-guided regimens (docs/regimens.md): ``outcome_records`` holds a patient's dated outcome
measures under a plan (grip strength per hand, MRC sum score, a disability scale, the reported
wearing-off day or none); ``review_decisions`` the outcome reviews' decisions, from which the
next review date is worked out. Both append-only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "outcome_records",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("appointment_id", sa.String(length=40), nullable=False),
        sa.Column("recorded_on", sa.Date(), nullable=False),
        sa.Column("measure", sa.String(length=24), nullable=False),
        sa.Column("value", sa.String(length=40), nullable=True),
        sa.Column("hand", sa.String(length=8), nullable=False),
        sa.Column("scale", sa.String(length=8), nullable=False),
        sa.Column("wearing_off_none", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.Column("recorded_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_outcome_records_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["therapy_plans.id"], name=op.f("fk_outcome_records_plan_id_therapy_plans")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcome_records")),
    )
    with op.batch_alter_table("outcome_records", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outcome_records_patient_day", ["patient_id", "recorded_on", "id"], unique=False
        )
        batch_op.create_index(
            "ix_outcome_records_plan_day", ["plan_id", "recorded_on"], unique=False
        )
    op.create_table(
        "review_decisions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("decided_on", sa.Date(), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("decided_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["therapy_plans.id"],
            name=op.f("fk_review_decisions_plan_id_therapy_plans"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
    )
    with op.batch_alter_table("review_decisions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_review_decisions_plan_day", ["plan_id", "decided_on"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("review_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_review_decisions_plan_day")
    op.drop_table("review_decisions")
    with op.batch_alter_table("outcome_records", schema=None) as batch_op:
        batch_op.drop_index("ix_outcome_records_plan_day")
        batch_op.drop_index("ix_outcome_records_patient_day")
    op.drop_table("outcome_records")
