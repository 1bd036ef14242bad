"""Conversions between protobuf well-known/common types and Python values.

Grams, kilograms and millilitres travel as decimal strings (docs/api.md: never floats); parsing
them here reports a field violation instead of raising a bare ValueError. The request contract
(services.common.validation) already refused malformed input; the checks here hold on their own
too, so that nothing parsed from a request can cost more than its few characters: a decimal is
plain notation of bounded size before ``Decimal`` sees it (``Decimal("1E-999999999")`` is
cheap, but formatting it writes a billion digits), and a date lies in the platform's range
before any date arithmetic can overflow.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, money_pb2, timeofday_pb2

from services.common.errors import Violations, brief

NANOS = Decimal(1_000_000_000)

EARLIEST_DATE = dt.date(1900, 1, 1)
LATEST_DATE = dt.date(2200, 12, 31)
"""Dates a request may carry: room for birth dates and plans, far from the calendar's edges."""
EARLIEST_INSTANT = int(dt.datetime(1900, 1, 1, tzinfo=dt.UTC).timestamp())
LATEST_INSTANT = int(dt.datetime(2200, 1, 1, tzinfo=dt.UTC).timestamp())
"""Timestamps a request may carry, in seconds since the epoch: [EARLIEST, LATEST)."""

_PLAIN_DECIMAL = re.compile(r"[+-]?[0-9]{1,15}(?:\.[0-9]{1,9})?")
"""Plain notation, at most 15 digits before the point and 9 after: no exponent, so the value's
size is its text's."""


def parse_decimal(
    text: str,
    field: str,
    violations: Violations,
    *,
    required: bool = True,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
) -> Decimal | None:
    """A decimal string from a request, checked against an inclusive range."""
    if text == "":
        if required:
            violations.add(field, 'is required (a decimal string such as "70.5")')
        return None
    if not _PLAIN_DECIMAL.fullmatch(text):
        violations.add(
            field,
            f"{brief(text)!r} is not a plain decimal number (digits and at most one point, "
            "no exponent)",
        )
        return None
    value = Decimal(text)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "" if minimum is None else f"{minimum}"
        high = "" if maximum is None else f"{maximum}"
        violations.add(field, f"{value} is outside the allowed range {low}–{high}")
        return None
    return value


def decimal_str(value: Decimal | None) -> str:
    """Plain decimal notation without exponent; empty for None."""
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return text


def to_date(value: date_pb2.Date) -> dt.date:
    return dt.date(value.year, value.month, value.day)


def parse_date(
    value: date_pb2.Date, field: str, violations: Violations, *, required: bool = True
) -> dt.date | None:
    if value.year == 0 and value.month == 0 and value.day == 0:
        if required:
            violations.add(field, "is required")
        return None
    try:
        day = to_date(value)
    except ValueError:
        violations.add(field, f"{value.year:04d}-{value.month:02d}-{value.day:02d} is not a date")
        return None
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        violations.add(field, f"must be a date from {EARLIEST_DATE} to {LATEST_DATE}")
        return None
    return day


def from_date(value: dt.date | None) -> date_pb2.Date:
    if value is None:
        return date_pb2.Date()
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def from_datetime(value: dt.datetime | None) -> Timestamp:
    ts = Timestamp()
    if value is not None:
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def to_datetime(value: Timestamp) -> dt.datetime:
    return value.ToDatetime(tzinfo=dt.UTC)


def parse_time_of_day(
    value: timeofday_pb2.TimeOfDay, field: str, violations: Violations
) -> dt.time | None:
    if value.hours == 24 and value.minutes == 0 and value.seconds == 0:
        return dt.time.max.replace(microsecond=0)
    try:
        return dt.time(value.hours, value.minutes, value.seconds)
    except ValueError:
        violations.add(field, f"{value.hours:02d}:{value.minutes:02d} is not a time of day")
        return None


def from_time_of_day(value: dt.time) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=value.hour, minutes=value.minute, seconds=value.second)


def to_money(amount: Decimal, currency: str) -> money_pb2.Money:
    units = int(amount)
    nanos = int((amount - units) * NANOS)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def from_money(value: money_pb2.Money) -> Decimal:
    return Decimal(value.units) + Decimal(value.nanos) / NANOS
