"""The inventory's settings: the shared shape (services/common/settings.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from services.common.settings import ServiceSettings, load


class InventorySettings(ServiceSettings):
    service: ClassVar[str] = "inventory"


def load_settings(environ: Mapping[str, str] | None = None) -> InventorySettings:
    return load(InventorySettings, environ)
