"""audit trail

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 11:00:00.000000

The scheduler's audit trail: one append-only, hash-chained table of records of its mutations and
patient reads (docs/security.md, "Audit trail"; services/common/audit/schema.py).
"""

from collections.abc import Sequence

from services.common.audit import schema

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    schema.upgrade("scheduler")


def downgrade() -> None:
    """Downgrade schema."""
    schema.downgrade("scheduler")
