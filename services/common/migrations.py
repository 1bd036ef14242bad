"""Alembic per service, run at start-up before the health status turns SERVING.

Each service keeps its migrations in ``services/<name>/store/migrations`` and its own version
table (``alembic_version_<name>``), so services can share one database in small deployments
and in tests without their histories colliding.
"""

from __future__ import annotations

from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Engine, MetaData, text


def alembic_config(service: str, engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", f"services.{service}.store:migrations")
    cfg.attributes["version_table"] = f"alembic_version_{service}"
    if engine is not None:
        url = engine.url.render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser escaping
    return cfg


def upgrade(service: str, engine: Engine, revision: str = "head") -> None:
    """Apply every pending migration of ``service`` to the engine's database."""
    cfg = alembic_config(service, engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # replicas starting together on a database that is behind: one migrates, the
            # others wait here and then find it at head (a per-service key, held to commit)
            connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"migrate:{service}"},
            )
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py (online mode only)."""
    cfg = context.config
    version_table: str = cfg.attributes["version_table"]
    options: dict[str, Any] = {
        "target_metadata": target_metadata,
        "version_table": version_table,
        "render_as_batch": True,  # SQLite needs batch mode for ALTER TABLE
        "compare_type": True,
    }
    connection = cfg.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    from sqlalchemy import create_engine

    engine = create_engine(cfg.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, **options)
        with context.begin_transaction():
            context.run_migrations()
