"""The audit table as the services' first audit migrations create it (scheduler 0010,
inventory 0006, notify 0004). Frozen: a later change to the table is a new migration, not an
edit here.

On PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE (append-only, whoever the
database user); on SQLite triggers refuse UPDATE and DELETE. Tampering then needs a database
owner who drops the trigger first, and ``verify`` still finds what was changed.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import MetaData

from services.common.audit.store import define_audit_table, table_name


def upgrade(service: str) -> None:
    table = define_audit_table(MetaData(), service)
    table.create(op.get_bind())
    name = table_name(service)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION {name}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION 'the audit trail is append-only ({name})';
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {name} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {name}_no_{verb.lower()} BEFORE {verb} ON {name} "
                f"BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
            )


def downgrade(service: str) -> None:
    name = table_name(service)
    op.drop_table(name)  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {name}_append_only()")
