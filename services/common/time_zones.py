"""Time-zone names as the services accept them. Domain-pure (no gRPC, no SQL): sites, stock sites
and subscribers keep an IANA zone so "today", opening hours and quiet hours are local ones."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


def is_valid_time_zone(name: str) -> bool:
    """True for a name in the IANA database that also loads. Checking the list first refuses
    what ``ZoneInfo`` alone would open from the file system but is no zone name (a path, a
    ``posixrules`` file); loading it second refuses a listed zone whose data is missing."""
    if not name or name not in available_timezones():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
