"""stock site organisation

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 11:00:00.000000

A stock site belongs to an organisation, and so does everything at the site (lots, ledger,
reservations, administrations, forecasts, reorder policies, purchase orders): reads, lists
and writes are limited to the caller's organisation (docs/security.md, "Scope").

The inventory cannot know whose the sites created before this migration were (the
organisation lives in the scheduler's database). A deployment that served one organisation
names it in LEGACY_ORGANISATION_ID and every existing site becomes that organisation's;
otherwise they get "" (nobody), which only our own services see, until an operator assigns
each to its organisation (docs/operations.md, "Assigning data to organisations").
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("stock_sites", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("organisation_id", sa.String(length=100), server_default="", nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_stock_sites_organisation_id"), ["organisation_id"], unique=False
        )
    legacy = os.environ.get("LEGACY_ORGANISATION_ID", "")
    if legacy:
        op.execute(sa.text("UPDATE stock_sites SET organisation_id = :o").bindparams(o=legacy))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("stock_sites", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stock_sites_organisation_id"))
        batch_op.drop_column("organisation_id")
