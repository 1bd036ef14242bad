"""Each service's Alembic history builds exactly the schema its models declare, on both
databases, and applying it twice is harmless (start-up runs it every time)."""

from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.common.db import Database
from services.common.migrations import upgrade


@pytest.mark.parametrize("service", ["scheduler", "inventory", "notify"])
def test_migrations_match_models_and_are_idempotent(database_url: str, service: str) -> None:
    db = Database(database_url)
    try:
        upgrade(service, db.engine)
        upgrade(service, db.engine)
        models = importlib.import_module(f"services.{service}.store.models")
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": f"alembic_version_{service}"}
            )
            assert compare_metadata(ctx, models.Base.metadata) == []
        assert f"alembic_version_{service}" in inspect(db.engine).get_table_names()
    finally:
        db.dispose()
