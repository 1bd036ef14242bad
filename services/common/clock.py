"""Clocks are passed in, never read inside domain code, so tests can pin time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stays where it is put; ``advance`` moves it."""

    def __init__(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware instant")
        self._now = instant.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, instant: datetime) -> None:
        self._now = instant.astimezone(UTC)


def zone_where_the_day_begins(instant: datetime) -> str:
    """A fixed-offset IANA zone (``Etc/GMT±N``) in which ``instant`` falls in the first hour of
    the local day. For runs on the real clock (the end-to-end test, the walk-through): a visit
    booked for that local day is hours ahead, and can still be checked in, started and completed
    now, as the chair's steps are only accepted on the visit's local day."""
    offset = -instant.astimezone(UTC).hour % 24  # local hour 0 at UTC+offset
    if offset > 14:  # Etc zones run from UTC-12 to UTC+14
        offset -= 24
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"
