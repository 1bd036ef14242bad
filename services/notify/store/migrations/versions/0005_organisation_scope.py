"""organisation scope

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 11:00:00.000000

Subscribers and notifications belong to an organisation (docs/security.md, "Scope"): lists,
reads, recipients and the Subscribe stream show the caller's organisation's only. A dedupe
key becomes the publishing organisation's (unique per organisation, not globally), so one
organisation's keys can neither collide with nor reveal another's.

Notify cannot know whose the rows written before this migration were. A deployment that served
one organisation names it in LEGACY_ORGANISATION_ID and they become that organisation's;
otherwise they get "" (none), which only our own services see, until an operator assigns them
(docs/operations.md, "Assigning data to organisations").
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("notify_subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("organisation_id", sa.String(length=100), server_default="", nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_notify_subscribers_organisation_id"), ["organisation_id"], unique=False
        )
    with op.batch_alter_table("notify_notifications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("organisation_id", sa.String(length=100), server_default="", nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_notify_notifications_organisation_id"),
            ["organisation_id"],
            unique=False,
        )
        batch_op.drop_constraint("uq_notify_notifications_dedupe_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_notify_notifications_organisation_dedupe", ["organisation_id", "dedupe_key"]
        )
    legacy = os.environ.get("LEGACY_ORGANISATION_ID", "")
    if legacy:
        for table in ("notify_subscribers", "notify_notifications"):
            op.execute(sa.text(f"UPDATE {table} SET organisation_id = :o").bindparams(o=legacy))


def downgrade() -> None:
    """Downgrade schema (fails if two organisations now share a dedupe key)."""
    with op.batch_alter_table("notify_notifications", schema=None) as batch_op:
        batch_op.drop_constraint("uq_notify_notifications_organisation_dedupe", type_="unique")
        batch_op.create_unique_constraint("uq_notify_notifications_dedupe_key", ["dedupe_key"])
        batch_op.drop_index(batch_op.f("ix_notify_notifications_organisation_id"))
        batch_op.drop_column("organisation_id")
    with op.batch_alter_table("notify_subscribers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notify_subscribers_organisation_id"))
        batch_op.drop_column("organisation_id")
