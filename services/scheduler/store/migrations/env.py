"""Alembic environment for the scheduler (the shared body lives in services.common)."""

from services.common.migrations import run_env
from services.scheduler.store.models import Base

run_env(Base.metadata)
