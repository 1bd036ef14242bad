"""Stock sites and storage units. A stock site carries the scheduler's site id and
the site's IANA time zone: "today", "in date" and the expiry job's hour are the site's local
ones, never the server's."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from services.common.errors import Violations
from services.common.time_zones import is_valid_time_zone

DEFAULT_EXPIRY_CHECK_TIME = dt.time(6, 0)
# LOT_EXPIRING warnings, days before expiry, per site (docs/clinical-rules.md#notification-timing).
DEFAULT_EXPIRY_WARNING_DAYS = (90, 60, 30)


@dataclass(frozen=True)
class StockSite:
    id: str
    display_name: str
    time_zone: str
    expiry_check_time: dt.time = DEFAULT_EXPIRY_CHECK_TIME
    expiry_warning_days: tuple[int, ...] = field(default=DEFAULT_EXPIRY_WARNING_DAYS)
    # the organisation the site, and everything at it, belongs to (docs/security.md, "Scope")
    organisation_id: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def local_date(self, instant: dt.datetime) -> dt.date:
        return instant.astimezone(self.zone).date()


@dataclass(frozen=True)
class StorageUnit:
    id: str
    site_id: str
    display_name: str
    storage: str


def validate_site(site: StockSite, prefix: str = "site") -> Violations:
    v = Violations()
    if not site.id.strip():
        v.add(f"{prefix}.id", "is required: use the scheduler's site id")
    if not site.display_name.strip():
        v.add(f"{prefix}.display_name", "is required")
    if not is_valid_time_zone(site.time_zone):
        v.add(f"{prefix}.time_zone", f"{site.time_zone!r} is not an IANA time zone name")
    days = site.expiry_warning_days
    if any(d <= 0 or d > 730 for d in days):
        v.add(f"{prefix}.expiry_warning_days", "each threshold must be 1 to 730 days")
    if len(set(days)) != len(days):
        v.add(f"{prefix}.expiry_warning_days", "thresholds must not repeat")
    return v
