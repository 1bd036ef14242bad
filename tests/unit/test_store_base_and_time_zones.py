"""What the three services share below their own code: the time-zone check their sites and
subscribers use, and the store base each service's tables are declared on."""

from __future__ import annotations

import pytest

from services.common.store_base import NAMING_CONVENTION, service_metadata
from services.common.time_zones import is_valid_time_zone
from services.inventory.store.models import Base as InventoryBase
from services.notify.store.models import Base as NotifyBase
from services.scheduler.store.models import Base as SchedulerBase


@pytest.mark.parametrize("name", ["Europe/London", "America/New_York", "UTC", "Etc/GMT+1"])
def test_an_iana_zone_name_is_accepted(name: str) -> None:
    assert is_valid_time_zone(name)


@pytest.mark.parametrize("name", ["", "Mars/Olympus_Mons", "europe/london", "../etc/passwd"])
def test_a_name_outside_the_iana_list_is_refused(name: str) -> None:
    assert not is_valid_time_zone(name)


def test_each_service_keeps_its_own_metadata_with_the_shared_naming_convention() -> None:
    metadatas = [InventoryBase.metadata, NotifyBase.metadata, SchedulerBase.metadata]
    assert len({id(m) for m in metadatas}) == 3  # each migrates only its own tables
    assert all(m.naming_convention == service_metadata().naming_convention for m in metadatas)
    assert not set(NotifyBase.metadata.tables) & set(SchedulerBase.metadata.tables)
    assert NAMING_CONVENTION["pk"] == "pk_%(table_name)s"
