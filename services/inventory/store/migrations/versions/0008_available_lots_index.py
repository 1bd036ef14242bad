"""available lots index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 05:00:00.000000

An index of the AVAILABLE lots by site, product, vial size and expiry: a reservation's read of
promisable lots walks it in allocation order and stops after a few lots of each size, so its
cost no longer grows with the number of lots a product has (store/reservations.py,
``promisable``). The lots table holds one row per manufacturer lot at a site (thousands, not
millions), so the index is built in the migration's transaction.
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
    op.create_index(
        "ix_lots_available",
        "lots",
        ["site_id", "product_id", "presentation_grams", "expiry_date"],
        unique=False,
        postgresql_where=sa.text("state = 'AVAILABLE'"),
        sqlite_where=sa.text("state = 'AVAILABLE'"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(
        "ix_lots_available",
        table_name="lots",
        postgresql_where=sa.text("state = 'AVAILABLE'"),
        sqlite_where=sa.text("state = 'AVAILABLE'"),
    )
