"""plan versions' due inputs

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 10:00:00.000000

``therapy_plan_versions.due_inputs``: the due rule's inputs out of the version's specification
(services/scheduler/store/due_inputs.py), so that the due scan's first pass reads a short
string per plan instead of parsing every stored specification (docs/benchmarks.md,
"2026-12-03"). Existing versions are filled in from their specifications, here in Python, by
the same ``encode`` the column's default uses (one derivation, so no database's JSON functions
can disagree with it); then the column becomes NOT NULL.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.scheduler.store.due_inputs import encode

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5000


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("therapy_plan_versions", sa.Column("due_inputs", sa.Text(), nullable=True))
    connection = op.get_bind()
    versions = sa.table(
        "therapy_plan_versions",
        sa.column("plan_id", sa.String),
        sa.column("version", sa.Integer),
        sa.column("spec", sa.JSON),
        sa.column("due_inputs", sa.Text),
    )
    update = (
        versions.update()
        .where(
            versions.c.plan_id == sa.bindparam("p"),
            versions.c.version == sa.bindparam("v"),
        )
        .values(due_inputs=sa.bindparam("d"))
    )
    # a batch at a time in key order (the specs are ~1 kB each: not all in memory at once);
    # as text, decoded here: the same on every dialect and driver
    read = (
        sa.select(versions.c.plan_id, versions.c.version, sa.cast(versions.c.spec, sa.Text))
        .order_by(versions.c.plan_id, versions.c.version)
        .limit(_BATCH)
    )
    rows = connection.execute(read).all()
    while rows:
        connection.execute(
            update,
            [
                {"p": plan_id, "v": version, "d": encode(json.loads(spec))}
                for plan_id, version, spec in rows
            ],
        )
        plan_id, version = rows[-1][0], rows[-1][1]
        after = (versions.c.plan_id > plan_id) | (
            (versions.c.plan_id == plan_id) & (versions.c.version > version)
        )
        rows = connection.execute(read.where(after)).all()
    with op.batch_alter_table("therapy_plan_versions") as batch:
        batch.alter_column("due_inputs", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("therapy_plan_versions") as batch:
        batch.drop_column("due_inputs")
