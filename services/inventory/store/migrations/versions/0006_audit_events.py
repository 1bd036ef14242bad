"""audit trail

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 11:00:00.000000

The inventory's audit trail: one append-only, hash-chained table of records of its mutations and
patient reads (docs/security.md, "Audit trail"; services/common/audit/schema.py).
"""

from collections.abc import Sequence

from services.common.audit import schema

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    schema.upgrade("inventory")


def downgrade() -> None:
    """Downgrade schema."""
    schema.downgrade("inventory")
