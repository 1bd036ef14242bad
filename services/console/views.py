"""What the pages show, worked out from what the services answered: plain functions of plain
values (no HTTP, no gRPC), so the arithmetic is tested on its own (tests/unit/
test_console_views.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

# Appointment status (scheduler.v1.AppointmentStatus numbers) -> what the board says
STATUS_LABELS = {
    1: "held",
    2: "booked",
    3: "checked in",
    4: "in chair",
    5: "done",
    6: "cancelled",
    7: "no-show",
}
AT_RISK = "at risk for stock"


def status_label(status: int, stock_at_risk: bool) -> str:
    """A booked infusion whose vials could not be reserved is "at risk for stock" until it
    is under way; otherwise the appointment's own status."""
    if stock_at_risk and status in (2, 3):
        return AT_RISK
    return STATUS_LABELS.get(status, "unknown")


@dataclass(frozen=True)
class Interval:
    start: int  # minutes after midnight, site-local
    end: int


@dataclass(frozen=True)
class Placement:
    left: float  # percent of the day's axis
    width: float


def place(block: Interval, axis: Interval) -> Placement:
    """Where a block sits on the axis, in percent, clipped to it. 09:00-11:00 on an
    08:00-18:00 axis: left 10 %, width 20 %."""
    span = max(axis.end - axis.start, 1)
    start = min(max(block.start, axis.start), axis.end)
    end = min(max(block.end, axis.start), axis.end)
    return Placement(
        round(100 * (start - axis.start) / span, 3), round(100 * (end - start) / span, 3)
    )


def hours(axis: Interval) -> list[int]:
    """The whole hours the axis covers (their starts, in minutes): 08:00-18:00 gives ten."""
    first = axis.start - axis.start % 60
    return list(range(first, axis.end, 60))


@dataclass(frozen=True)
class Shift:
    weekday: int  # Monday 1 ... Sunday 7 (google.type.DayOfWeek)
    start: int
    end: int
    nurses: int


@dataclass(frozen=True)
class HourLoad:
    hour: int  # minutes after midnight
    patients: int  # most patients in chairs at once during the hour
    capacity: int | None  # nurses on duty x ratio at the hour's start; None: no nurse model

    @property
    def label(self) -> str:
        return f"{self.hour // 60:02d}:00"

    @property
    def over(self) -> bool:
        return self.capacity is not None and self.patients > self.capacity


def nurse_load(
    appointments: Iterable[Interval],
    axis: Interval,
    shifts: Sequence[Shift],
    ratio: int,
    day: dt.date,
) -> list[HourLoad]:
    """Per hour of the axis, the peak of patients in chairs (minute by minute) and what the
    nurses on duty can monitor (their number x the ratio, at the hour's start). Without
    shifts the site has no nurse model and the capacity is None."""
    busy = list(appointments)
    weekday = day.isoweekday()
    result = []
    for hour in hours(axis):
        peak = 0
        for minute in range(hour, hour + 60):
            peak = max(peak, sum(1 for a in busy if a.start <= minute < a.end))
        capacity = None
        if shifts:
            nurses = sum(
                s.nurses for s in shifts if s.weekday == weekday and s.start <= hour < s.end
            )
            capacity = nurses * ratio
        result.append(HourLoad(hour, peak, capacity))
    return result


def minutes(hours_: int, minutes_: int) -> int:
    return hours_ * 60 + minutes_


def clock(total: int) -> str:
    return f"{total // 60:02d}:{total % 60:02d}"


@dataclass(frozen=True)
class ExpiringLot:
    lot_number: str
    product_id: str
    expiry: dt.date
    days_left: int
    on_hand: int
    reserved: int


def expiring(
    lots: Iterable[tuple[str, str, dt.date, int, int]], today: dt.date, within_days: int
) -> list[ExpiringLot]:
    """Lots with vials on hand that expire within ``within_days`` of ``today`` (expired ones
    included, with negative days left), soonest first. Each lot is (number, product, expiry,
    on hand, reserved)."""
    found = [
        ExpiringLot(number, product, expiry, (expiry - today).days, on_hand, reserved)
        for number, product, expiry, on_hand, reserved in lots
        if on_hand > 0 and (expiry - today).days <= within_days
    ]
    return sorted(found, key=lambda lot: (lot.expiry, lot.product_id, lot.lot_number))


# -- the stock forecast chart ------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastDay:
    day: dt.date
    on_hand: Decimal  # grams in date at the start of the day
    reserved: Decimal  # grams reserved for the day's bookings
    forecast: Decimal  # grams the scheduler expects but has not booked
    available: Decimal  # grams projected at the end of the day
    shortfall: Decimal  # grams of the day's demand the stock could not cover


@dataclass(frozen=True)
class Bar:
    day: dt.date
    x: float
    width: float
    reserved_y: float  # the reserved part sits on the axis
    reserved_height: float
    forecast_y: float  # the forecast part on top of it
    forecast_height: float


@dataclass(frozen=True)
class Chart:
    """An SVG chart's geometry in user units (the template draws it)."""

    width: int
    height: int
    left: int
    top: int
    bottom: float  # the y of the zero line
    right: float
    on_hand: str  # polyline points
    available: str
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    stockout_x: float | None


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest of 1, 2, 5 x 10^k (k >= 0) at or above ``value``: 730 -> 1000, 180 ->
    200, 0 -> 1."""
    step = Decimal(1)
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def forecast_chart(
    days: Sequence[ForecastDay],
    stockout: dt.date | None,
    *,
    width: int = 760,
    height: int = 260,
    left: int = 60,
    top: int = 10,
    bottom_margin: int = 30,
) -> Chart:
    """Stock on hand and projected available as lines, each day's reserved and forecast demand
    as a stacked bar, on a scale from 0 to a round number at or above the largest value; the
    stockout day (the first with a shortfall) as an x position."""
    right = width - 10
    zero = height - bottom_margin
    plot_h = zero - top
    n = max(len(days), 1)
    step = (right - left) / n
    peak = max([Decimal(0)] + [max(d.on_hand, d.available, d.reserved + d.forecast) for d in days])
    scale = nice_ceiling(peak)

    def y(grams: Decimal) -> float:
        return round(zero - float(max(grams, Decimal(0)) / scale) * plot_h, 2)

    def x(i: int) -> float:
        return round(left + (i + 0.5) * step, 2)

    bars = []
    for i, d in enumerate(days):
        reserved_top = y(d.reserved)
        both_top = y(d.reserved + d.forecast)
        bars.append(
            Bar(
                d.day,
                round(x(i) - step * 0.3, 2),
                round(step * 0.6, 2),
                reserved_top,
                round(zero - reserved_top, 2),
                both_top,
                round(reserved_top - both_top, 2),
            )
        )
    y_ticks = [(y(scale * k / 4), format((scale * k / 4).normalize(), "f")) for k in range(5)]
    every = max(1, round(n / 8))
    x_ticks = [(x(i), d.day.strftime("%d %b")) for i, d in enumerate(days) if i % every == 0]
    stockout_x = next((x(i) for i, d in enumerate(days) if d.day == stockout), None)
    return Chart(
        width,
        height,
        left,
        top,
        zero,
        right,
        " ".join(f"{x(i)},{y(d.on_hand)}" for i, d in enumerate(days)),
        " ".join(f"{x(i)},{y(d.available)}" for i, d in enumerate(days)),
        bars,
        y_ticks,
        x_ticks,
        stockout_x,
    )


# -- outcomes: grip strength over time ---------------------------------------------------------


@dataclass(frozen=True)
class Series:
    name: str  # "left hand"
    points: str  # polyline points
    dots: list[tuple[float, float, str]]  # x, y, "2026-11-24: 31.5 kg"


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: int
    top: int
    bottom: float
    right: float
    series: list[Series]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]


def line_chart(
    readings: Sequence[tuple[str, dt.date, Decimal]],
    unit: str,
    *,
    width: int = 560,
    height: int = 220,
    left: int = 50,
    top: int = 10,
    bottom_margin: int = 30,
) -> LineChart:
    """Readings (series name, day, value) as one line per series on a shared time axis: x in
    proportion to the days from the first reading to the last, y from 0 to a round number at
    or above the largest value. A single day sits in the middle."""
    right = width - 30  # room for the last day's label
    zero = height - bottom_margin
    days = sorted({day for _, day, _ in readings})
    first, last = (days[0], days[-1]) if days else (dt.date.min, dt.date.min)
    span = (last - first).days
    scale = nice_ceiling(max([Decimal(0)] + [v for _, _, v in readings]))

    def x(day: dt.date) -> float:
        if span == 0:
            return round((left + right) / 2, 2)
        return round(left + (day - first).days / span * (right - left), 2)

    def y(value: Decimal) -> float:
        return round(zero - float(value / scale) * (zero - top), 2)

    series = []
    for name in sorted({n for n, _, _ in readings}):
        mine = sorted((d, v) for n, d, v in readings if n == name)
        series.append(
            Series(
                name,
                " ".join(f"{x(d)},{y(v)}" for d, v in mine),
                [(x(d), y(v), f"{d}: {v} {unit}") for d, v in mine],
            )
        )
    y_ticks = [(y(scale * k / 4), format((scale * k / 4).normalize(), "f")) for k in range(5)]
    x_ticks = [(x(d), d.strftime("%d %b %y")) for d in days[:: max(1, round(len(days) / 6))]]
    return LineChart(width, height, left, top, zero, right, series, y_ticks, x_ticks)
