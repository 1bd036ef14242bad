"""audit trail

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 11:00:00.000000

The notify's audit trail: one append-only, hash-chained table of records of its mutations and
patient reads (docs/security.md, "Audit trail"; services/common/audit/schema.py).
"""

from collections.abc import Sequence

from services.common.audit import schema

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    schema.upgrade("notify")


def downgrade() -> None:
    """Downgrade schema."""
    schema.downgrade("notify")
