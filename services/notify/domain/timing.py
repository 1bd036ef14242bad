"""When a delivery may go: quiet hours in the subscriber's local time, and retry backoff.

Quiet hours are wall-clock times; the end of a quiet period is found on the local calendar and
then converted to UTC through zoneinfo, so a daylight-saving change between the start and the
end of the quiet period moves the UTC instant, never the local time.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from services.notify.domain.model import QuietHours


def quiet_until(instant: dt.datetime, zone: ZoneInfo, quiet: QuietHours | None) -> dt.datetime:
    """The end of the quiet period ``instant`` falls in, or ``instant`` itself if none."""
    if quiet is None or quiet.start == quiet.end:
        return instant
    local = instant.astimezone(zone)
    now = local.time().replace(tzinfo=None)
    day = local.date()
    if quiet.start < quiet.end:  # e.g. 12:00-14:00, within one day
        if not quiet.start <= now < quiet.end:
            return instant
        end_day = day
    elif now >= quiet.start:  # e.g. 22:00-07:00, evening part: ends tomorrow
        end_day = day + dt.timedelta(days=1)
    elif now < quiet.end:  # early-morning part: ends today
        end_day = day
    else:
        return instant
    end = dt.datetime.combine(end_day, quiet.end, tzinfo=zone)
    # A wall time inside a spring-forward gap (fold=0) maps to the instant just after the gap.
    released = end.astimezone(dt.UTC)
    return max(released, instant)


def backoff(attempt: int, *, base: dt.timedelta, cap: dt.timedelta, jitter: float) -> dt.timedelta:
    """Delay after failed attempt number ``attempt`` (1-based): base * 2^(attempt-1), capped,
    scaled by ``jitter`` in [0.5, 1] ("equal jitter") so retries of many deliveries that failed
    together spread out instead of arriving together."""
    exponent = min(max(attempt - 1, 0), 30)
    delay: dt.timedelta = min(base * (2**exponent), cap)
    factor = min(max(jitter, 0.5), 1.0)
    return delay * factor
