"""The inventory's settings: the shared shape (services/common/settings.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from services.common.settings import RelayingSettings, load


class InventorySettings(RelayingSettings):
    service: ClassVar[str] = "inventory"

    # how often inventory gives stock sites created since (through any replica) their daily
    # expiry and reorder check
    jobs_interval_seconds: float = Field(300.0, gt=0, le=24 * 3600)


def load_settings(environ: Mapping[str, str] | None = None) -> InventorySettings:
    return load(InventorySettings, environ)
