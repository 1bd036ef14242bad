"""appointment reminders, scheduled at booking

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 18:59:03.737516

Appointments already booked for the future get their reminders here, as a booking made now
would (SCHEDULER_REMINDER_OFFSETS_HOURS, counted on the site's wall clock); until this
revision the reminder job derived them from the bookings at their time.
"""

import datetime as dt
import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.scheduler.store.reminders import schedule_booked

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "appointment_reminders",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("appointment_id", sa.String(length=40), nullable=False),
        sa.Column("offset_label", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointments.id"],
            name=op.f("fk_appointment_reminders_appointment_id_appointments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_reminders")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_appointment_reminders_dedupe_key")),
    )
    with op.batch_alter_table("appointment_reminders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_appointment_reminders_appointment_id"), ["appointment_id"], unique=False
        )
        batch_op.create_index(
            "ix_appointment_reminders_status_due", ["status", "due_at"], unique=False
        )
    # the offsets a booking uses (SCHEDULER_REMINDER_OFFSETS_HOURS, validated by the service's
    # settings before migrations run), read here so the migration does not load the settings
    offsets = os.environ.get("SCHEDULER_REMINDER_OFFSETS_HOURS", "72,24")
    hours = tuple(sorted({float(x) for x in offsets.split(",") if x.strip()}, reverse=True))
    schedule_booked(op.get_bind(), hours, dt.datetime.now(dt.UTC))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("appointment_reminders", schema=None) as batch_op:
        batch_op.drop_index("ix_appointment_reminders_status_due")
        batch_op.drop_index(batch_op.f("ix_appointment_reminders_appointment_id"))
    op.drop_table("appointment_reminders")
