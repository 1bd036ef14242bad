"""Alembic environment for inventory (the shared body lives in services.common)."""

from services.common.migrations import run_env
from services.inventory.store.models import Base

run_env(Base.metadata)
