"""The audit table as the services' first audit migrations create it (scheduler 0010,
inventory 0006, notify 0004). Frozen: a later change to the table is a new migration, not an
edit here.

The records and the chain are append-only: on PostgreSQL a trigger refuses UPDATE, DELETE and
TRUNCATE (whoever the database user), on SQLite triggers refuse UPDATE and DELETE. Tampering
then needs a database owner who drops the triggers first, and ``verify`` still finds what was
changed. The pending table is the linker's work list, deleted from as records are linked.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import MetaData

from services.common.audit.store import define_audit_tables, table_names


def upgrade(service: str) -> None:
    tables = define_audit_tables(MetaData(), service)
    for table in (tables.events, tables.chain, tables.pending):
        table.create(op.get_bind())
    for table in (tables.events, tables.chain):
        _append_only(table.name)


def _append_only(name: str) -> None:
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
    events, chain, pending = table_names(service)
    for name in (pending, chain, events):
        op.drop_table(name)  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        for name in (chain, events):
            op.execute(f"DROP FUNCTION IF EXISTS {name}_append_only()")
