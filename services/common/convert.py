"""Conversions between protobuf well-known/common types and Python values.

Grams, kilograms and millilitres travel as decimal strings (DESIGN.md: never floats); parsing
them here reports a field violation instead of raising a bare ValueError.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, money_pb2, timeofday_pb2

from services.common.errors import Violations

NANOS = Decimal(1_000_000_000)


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
    try:
        value = Decimal(text)
    except InvalidOperation:
        violations.add(field, f"{text!r} is not a decimal number")
        return None
    if not value.is_finite():
        violations.add(field, f"{text!r} is not a finite number")
        return None
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
        return to_date(value)
    except ValueError:
        violations.add(field, f"{value.year:04d}-{value.month:02d}-{value.day:02d} is not a date")
        return None


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
