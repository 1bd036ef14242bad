"""Alembic environment for notify (the shared body lives in services.common)."""

from services.common.migrations import run_env
from services.notify.store.models import Base

run_env(Base.metadata)
