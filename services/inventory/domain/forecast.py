"""Stock forecast and reorder arithmetic (docs/forecast-and-reorder.md).

Pure rules: the caller reads lots, reservations, forecasts and open purchase orders, and passes
the site's "today"; nothing here touches SQL, gRPC or a clock. Grams are Decimals throughout.

The forecast treats the shelf as buckets of grams, one per last usable day. Each day stock that
is past its last usable day leaves ("expiring"), deliveries arrive, and the day's demand is
taken first-expiry-first-out from what is in date that day. Demand that cannot be met is that
day's shortfall; it is not carried to the next day (a patient not treated on the day is not
treated from tomorrow's stock by this model: a booking moves and arrives as new demand).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from services.common.errors import Violations

ZERO = Decimal(0)
MAX_HORIZON_DAYS = 366


@dataclass(frozen=True)
class Bucket:
    """Grams on the shelf usable up to and including ``last_day``."""

    grams: Decimal
    last_day: dt.date


@dataclass(frozen=True)
class ForecastInputs:
    start: dt.date  # the first simulated day: the site's today (stock is read as of now)
    days: int
    stock: tuple[Bucket, ...]  # in-date AVAILABLE lots on ``start``
    arrivals: Mapping[dt.date, Decimal]  # open purchase-order grams by expected date
    reserved: Mapping[dt.date, Decimal]  # reserved demand by needed-on date
    forecast: Mapping[dt.date, Decimal]  # pushed, not yet booked demand by day
    undated_arrivals: Decimal = ZERO  # open purchase-order grams with no expected date


@dataclass(frozen=True)
class DayForecast:
    date: dt.date
    in_date_on_hand: Decimal
    reserved_demand: Decimal
    forecast_demand: Decimal
    arriving: Decimal
    expiring: Decimal
    projected_available: Decimal
    shortfall: Decimal


@dataclass(frozen=True)
class StockForecast:
    days: tuple[DayForecast, ...]

    def first_stockout(self, start: dt.date | None = None) -> dt.date | None:
        for day in self.days:
            if day.shortfall > 0 and (start is None or day.date >= start):
                return day.date
        return None

    def between(self, first: dt.date, last: dt.date) -> tuple[DayForecast, ...]:
        return tuple(d for d in self.days if first <= d.date <= last)


@dataclass
class _Held:
    """A simulated bucket: what is left of it changes day by day."""

    last: dt.date
    grams: Decimal


def arrival_day(expected: dt.date, start: dt.date) -> dt.date:
    """An overdue delivery is still coming: it is expected on the first simulated day."""
    return max(expected, start)


def simulate(inputs: ForecastInputs) -> StockForecast:
    """Day by day: expire, then arrive, then consume first-expiry-first-out."""
    arrivals: dict[dt.date, Decimal] = {}
    for day, grams in inputs.arrivals.items():
        key = arrival_day(day, inputs.start)
        arrivals[key] = arrivals.get(key, ZERO) + grams
    # Deliveries have no known expiry: they outlast the horizon.
    shelf = sorted(
        (
            _Held(b.last_day, b.grams)
            for b in inputs.stock
            if b.grams > 0 and b.last_day >= inputs.start  # out of date already: not stock
        ),
        key=lambda h: h.last,
    )
    never = dt.date.max
    out = []
    for offset in range(inputs.days):
        day = inputs.start + dt.timedelta(days=offset)
        expiring = sum((h.grams for h in shelf if h.last < day), ZERO)
        shelf = [h for h in shelf if h.last >= day]
        on_hand = sum((h.grams for h in shelf), ZERO)
        arriving = arrivals.get(day, ZERO)
        if arriving > 0:
            if shelf and shelf[-1].last == never:
                shelf[-1].grams += arriving
            else:
                shelf.append(_Held(never, arriving))
        reserved = inputs.reserved.get(day, ZERO)
        forecast = inputs.forecast.get(day, ZERO)
        wanted = reserved + forecast
        for held in shelf:  # sorted by last usable day: first expiry first out
            if wanted <= 0:
                break
            taken = min(held.grams, wanted)
            held.grams -= taken
            wanted -= taken
        shelf = [h for h in shelf if h.grams > 0]
        out.append(
            DayForecast(
                date=day,
                in_date_on_hand=on_hand,
                reserved_demand=reserved,
                forecast_demand=forecast,
                arriving=arriving,
                expiring=expiring,
                projected_available=sum((h.grams for h in shelf), ZERO),
                shortfall=wanted,
            )
        )
    return StockForecast(tuple(out))


# --- reorder policy -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    lead_time_days: int
    safety_stock_grams: Decimal
    review_period_days: int
    order_presentation_grams: Decimal
    case_vials: int
    maximum_grams: Decimal  # 0: no maximum

    @property
    def cover_days(self) -> int:
        """The protection interval: an order placed now must last until the next one lands."""
        return self.lead_time_days + self.review_period_days


def validate_policy(p: Policy, presentations: Collection[Decimal], prefix: str) -> Violations:
    v = Violations()
    if p.lead_time_days < 0:
        v.add(f"{prefix}.lead_time_days", "must be 0 or more days")
    if p.review_period_days < 1:
        v.add(f"{prefix}.review_period_days", "must be at least 1 day")
    if p.cover_days > MAX_HORIZON_DAYS:
        v.add(
            f"{prefix}.review_period_days",
            f"lead time + review period must be at most {MAX_HORIZON_DAYS} days",
        )
    if p.safety_stock_grams < 0:
        v.add(f"{prefix}.safety_stock_grams", "must not be negative")
    if p.order_presentation_grams not in presentations:
        offered = ", ".join(f"{g.normalize()} g" for g in sorted(presentations))
        v.add(
            f"{prefix}.order_presentation_grams",
            f"the product comes in {offered}, not {p.order_presentation_grams} g",
        )
    if p.case_vials < 1:
        v.add(f"{prefix}.case_vials", "must be at least 1 vial")
    if p.maximum_grams < 0:
        v.add(f"{prefix}.maximum_grams", "must not be negative (0: no maximum)")
    elif 0 < p.maximum_grams < p.safety_stock_grams:
        v.add(f"{prefix}.maximum_grams", "must be 0 (no maximum) or at least the safety stock")
    return v


@dataclass(frozen=True)
class Order:
    """One reorder suggestion and every figure it came from, so the reason can show them."""

    as_of: dt.date
    cover_until: dt.date  # last day of the protection interval
    demand: Decimal  # reserved + forecast demand over the interval
    safety_stock: Decimal
    on_hand: Decimal  # in date at the start of as_of
    on_order: Decimal  # open purchase orders arriving from as_of on (or undated)
    expiring: Decimal  # what the forecast leaves unused to expire inside the interval
    need: Decimal  # demand + safety stock − (on hand + on order − expiring)
    vials: int
    grams: Decimal
    capped: bool  # the maximum cut the order below the need
    stockout_date: dt.date | None
    order_by_date: dt.date | None

    @property
    def position(self) -> Decimal:
        return self.on_hand + self.on_order - self.expiring


def reorder(
    policy: Policy, inputs: ForecastInputs, forecast: StockForecast, as_of: dt.date
) -> Order | None:
    """Periodic review, order up to: order whole cases to raise the inventory position to the
    demand of the protection interval plus safety stock, never above the maximum. None when
    nothing needs ordering (or the maximum leaves no room for a single case)."""
    cover_until = as_of + dt.timedelta(days=policy.cover_days - 1)
    window = forecast.between(as_of, cover_until)
    if not window or window[0].date != as_of or window[-1].date != cover_until:
        raise ValueError("the forecast must cover the whole protection interval")
    demand = sum((d.reserved_demand + d.forecast_demand for d in window), ZERO)
    expiring = sum((d.expiring for d in window[1:]), ZERO)
    on_hand = window[0].in_date_on_hand
    on_order = inputs.undated_arrivals + sum(
        (g for day, g in inputs.arrivals.items() if arrival_day(day, inputs.start) >= as_of),
        ZERO,
    )
    need = demand + policy.safety_stock_grams - (on_hand + on_order - expiring)
    if need <= 0:
        return None
    size = policy.order_presentation_grams
    case_grams = size * policy.case_vials
    cases = int((need / case_grams).to_integral_value(rounding=ROUND_CEILING))
    capped = False
    if policy.maximum_grams > 0:
        # Conservative: even if nothing were used or expired before the order landed, the
        # shelf would hold on hand + on order + this order, and that must not pass the maximum.
        room = policy.maximum_grams - on_hand - on_order
        fits = max(int((room / case_grams).to_integral_value(rounding=ROUND_FLOOR)), 0)
        if cases > fits:
            cases, capped = fits, True
    if cases == 0:
        return None
    vials = cases * policy.case_vials
    stockout = forecast.first_stockout(as_of)
    if stockout is not None and stockout > cover_until:
        stockout = None  # beyond this order's interval: the next review's business
    order_by = stockout - dt.timedelta(days=policy.lead_time_days) if stockout else None
    return Order(
        as_of=as_of,
        cover_until=cover_until,
        demand=demand,
        safety_stock=policy.safety_stock_grams,
        on_hand=on_hand,
        on_order=on_order,
        expiring=expiring,
        need=need,
        vials=vials,
        grams=vials * size,
        capped=capped,
        stockout_date=stockout,
        order_by_date=order_by,
    )


def _g(value: Decimal) -> str:
    return f"{format(value.normalize(), 'f')} g"


def explain(order: Order, policy: Policy) -> str:
    """The reason a pharmacist reads: what to order, why this much, and by when."""
    size = policy.order_presentation_grams
    cases = order.vials // policy.case_vials
    parts = [
        f"Order {order.vials} × {_g(size)} vials ({_g(order.grams)}"
        + (
            f", {cases} case{'s' if cases > 1 else ''} of {policy.case_vials}"
            if policy.case_vials > 1
            else ""
        )
        + ").",
        f"Demand from {order.as_of} to {order.cover_until} ({policy.lead_time_days}-day lead"
        f" time + {policy.review_period_days}-day review period) is {_g(order.demand)}"
        f" and safety stock is {_g(order.safety_stock)};",
        f"you hold {_g(order.on_hand)} in date and {_g(order.on_order)} on order,"
        + (
            f" of which {_g(order.expiring)} will expire unused before {order.cover_until},"
            if order.expiring > 0
            else ""
        )
        + f" so {_g(order.need)} is missing.",
    ]
    if order.capped:
        parts.append(f"Cut to keep the site within its {_g(policy.maximum_grams)} maximum.")
    if order.stockout_date is None:
        parts.append("No stockout is forecast in that time: this restores the safety stock.")
    elif order.order_by_date is not None and order.order_by_date < order.as_of:
        arrives = order.as_of + dt.timedelta(days=policy.lead_time_days)
        parts.append(
            f"Stock runs out on {order.stockout_date}; at the usual lead time this order lands on"
            f" {arrives}, too late: expedite it or cover from another site."
        )
    else:
        parts.append(
            f"Without it stock runs out on {order.stockout_date}: order by {order.order_by_date}."
        )
    return " ".join(parts)


def low_stock(available_grams: Decimal, policy: Policy) -> bool:
    """LOW_STOCK: what can still be promised today has fallen below the safety stock."""
    return available_grams < policy.safety_stock_grams
