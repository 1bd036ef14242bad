"""plan authorisations, payer caps and home infusions

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 16:00:00.000000

A plan's prior authorisations (``plan_authorisations``: payer, approved grams or doses, the
period, an override of the caps, and the end date an AUTHORISATION_EXPIRING was raised for)
and its payer caps (``plan_payer_caps``: grams per rolling 7 and 28 days, whether bookings need
an authorisation), and the doses given at home (``home_infusions``: a home-administration
plan's administrations, with their lots). Regimen conversions need no table: a converted
version's ramp-up, infusion days, regimen start and home flag live in its versioned
specification (JSON).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "plan_authorisations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("payer", sa.String(length=200), nullable=False),
        sa.Column("approved_grams", sa.String(length=40), nullable=True),
        sa.Column("approved_doses", sa.Integer(), nullable=True),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("cap_override_reason", sa.String(length=1000), nullable=False),
        sa.Column("expiry_notice_for", sa.Date(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["plan_id"], ["therapy_plans.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_plan_authorisations_plan_id", "plan_authorisations", ["plan_id"], unique=False
    )
    op.create_index(
        "ix_plan_authorisations_active_to",
        "plan_authorisations",
        ["active", "valid_to"],
        unique=False,
    )
    op.create_table(
        "plan_payer_caps",
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("payer", sa.String(length=200), nullable=False),
        sa.Column("grams_per_7_days", sa.String(length=40), nullable=True),
        sa.Column("grams_per_28_days", sa.String(length=40), nullable=True),
        sa.Column("authorisation_required", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["plan_id"], ["therapy_plans.id"]),
        sa.PrimaryKeyConstraint("plan_id"),
    )
    op.create_table(
        "home_infusions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(length=40), nullable=False),
        sa.Column("site_id", sa.String(length=40), nullable=False),
        sa.Column("given_on", sa.Date(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("ramp_step", sa.Integer(), nullable=False),
        sa.Column("grams_given", sa.String(length=40), nullable=False),
        sa.Column("product_id", sa.String(length=40), nullable=False),
        sa.Column("scanned_lots", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["plan_id"], ["therapy_plans.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_home_infusions_plan_day", "home_infusions", ["plan_id", "given_on"], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_home_infusions_plan_day", table_name="home_infusions")
    op.drop_table("home_infusions")
    op.drop_table("plan_payer_caps")
    op.drop_index("ix_plan_authorisations_active_to", table_name="plan_authorisations")
    op.drop_index("ix_plan_authorisations_plan_id", table_name="plan_authorisations")
    op.drop_table("plan_authorisations")
