"""Calendar months for reviews and authorisations: "+ n months" is the same day of the month n
calendar months later, clamped to that month's last day (docs/clinical-rules.md#regimen-cycles,
the conventions of section 10), so 31 August + 6 months is 28 or 29 February."""

from __future__ import annotations

import calendar
import datetime as dt


def add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))
