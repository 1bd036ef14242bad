"""Demand forecast, stock forecast, reorder policy and suggestions, and the daily reorder check.
Purchase orders live in ``purchase_orders`` (``planning.orders``); the arithmetic in
``domain.forecast``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Violations,
)
from services.common.etag import check_etag
from services.common.outbox import Outbox
from services.inventory.domain.catalogue import StoredProduct
from services.inventory.domain.forecast import (
    MAX_HORIZON_DAYS,
    Bucket,
    ForecastInputs,
    Order,
    Policy,
    StockForecast,
    explain,
    low_stock,
    reorder,
    simulate,
    validate_policy,
)
from services.inventory.store import planning as store
from services.inventory.store.models import ReorderPolicyRow
from services.inventory.usecases.catalogue import Catalogue
from services.inventory.usecases.purchase_orders import PurchaseOrders
from services.inventory.usecases.sites import Sites
from services.inventory.usecases.stock import Stock

MG_PER_G = Decimal(1000)
T = TypeVar("T")


@dataclass(frozen=True)
class DemandEntry:
    """One UpsertDemandForecast entry; None where the API could not parse the field."""

    site_id: str
    product_id: str
    day: dt.date | None
    grams: Decimal | None


@dataclass(frozen=True)
class StoredPolicy:
    site_id: str
    product_id: str
    policy: Policy
    revision: int


@dataclass(frozen=True)
class Suggestion:
    site_id: str
    product: StoredProduct
    policy: Policy
    order: Order
    cost: tuple[Decimal, str] | None  # estimated cost and currency
    reason: str


def _policy(row: ReorderPolicyRow) -> StoredPolicy:
    return StoredPolicy(
        row.site_id,
        row.product_id,
        Policy(
            lead_time_days=row.lead_time_days,
            safety_stock_grams=row.safety_stock_grams,
            review_period_days=row.review_period_days,
            order_presentation_grams=row.order_presentation_grams,
            case_vials=row.case_vials,
            maximum_grams=row.maximum_grams,
        ),
        row.revision,
    )


def _collect(v: Violations, check: Callable[..., T], *args: Any) -> T | None:
    """Run a check that raises InvalidArgument; keep its violations and go on."""
    try:
        return check(*args)
    except InvalidArgument as bad:
        v.extend(bad.violations)
        return None


def _g(value: Decimal) -> str:
    return format(value.normalize(), "f")


class Planning:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        catalogue: Catalogue,
        sites: Sites,
        stock: Stock,
        outbox: Outbox,
    ) -> None:
        self.db = db
        self.clock = clock
        self.catalogue = catalogue
        self.sites = sites
        self.stock = stock
        self.outbox = outbox
        self.orders = PurchaseOrders(db, clock, catalogue, sites, stock)

    def _product(self, product_id: str, field: str) -> StoredProduct:
        """A product named in a request: unknown is the caller's mistake in that field."""
        if not product_id:
            raise InvalidArgument([FieldViolation(field, "is required")])
        try:
            return self.catalogue.get(product_id)
        except NotFound as missing:
            raise InvalidArgument(
                [FieldViolation(field, f"no product {product_id!r}")]
            ) from missing

    def _today(self, session: Session, site_id: str, field: str) -> dt.date:
        if not site_id:
            raise InvalidArgument([FieldViolation(field, "is required")])
        return self.sites.known(session, site_id, field).local_date(self.clock.now())

    # --- demand forecast -----------------------------------------------------------------------

    def upsert_demand(self, session: Session, entries: list[DemandEntry], v: Violations) -> int:
        """All entries or none: ``v`` arrives with the API's parse errors and every entry's
        unknown site or product is added before anything is written."""
        if not entries:
            v.add("forecasts", "give at least one forecast")
        seen: dict[tuple[str, str, dt.date], int] = {}
        rows = []
        for i, e in enumerate(entries):
            f = f"forecasts[{i}]"
            _collect(v, self._today, session, e.site_id, f"{f}.site_id")
            product = _collect(v, self._product, e.product_id, f"{f}.product_id")
            product_id = product.id if product else e.product_id
            if e.grams is not None and e.grams < 0:
                v.add(f"{f}.grams", 'must not be negative ("0" removes the day)')
            elif e.grams is not None and (e.grams * MG_PER_G) % 1 != 0:
                v.add(f"{f}.grams", "is kept to the milligram: use at most 3 decimals")
            if e.day is not None:
                key = (e.site_id, product_id, e.day)
                if key in seen:
                    v.add(f"{f}.day", f"repeats forecasts[{seen[key]}]: give each day once")
                seen[key] = i
            if e.day is not None and e.grams is not None:
                rows.append((e.site_id, product_id, e.day, int(e.grams * MG_PER_G)))
        v.raise_if_any()
        store.upsert_forecasts(session, rows, self.clock.now())
        return len(rows)

    # --- stock forecast ------------------------------------------------------------------------

    def _inputs(
        self, session: Session, site_id: str, product_id: str, today: dt.date, days: int
    ) -> ForecastInputs:
        last = today + dt.timedelta(days=days - 1)
        arrivals: dict[dt.date, Decimal] = {}
        undated = Decimal(0)
        for expected, grams in store.open_arrivals(session, site_id, product_id):
            if expected is None:
                undated += grams
            else:
                arrivals[expected] = arrivals.get(expected, Decimal(0)) + grams
        return ForecastInputs(
            start=today,
            days=days,
            stock=tuple(
                Bucket(lot.on_hand_vials * lot.presentation_grams, lot.expiry_date)
                for lot in store.in_date_lots(session, site_id, product_id, today)
            ),
            arrivals=arrivals,
            reserved=store.reserved_by_day(session, site_id, product_id, today, last),
            forecast=store.forecast_by_day(session, site_id, product_id, today, last),
            undated_arrivals=undated,
        )

    def stock_forecast(
        self, site_id: str, product_id: str, start: dt.date | None, horizon: int
    ) -> StockForecast:
        """Simulated from the site's today (stock is known as of now) and reported from
        ``start``: a later start still sees the demand and deliveries before it."""
        with self.db.read() as session:
            today = self._today(session, site_id, "site_id")
            product = self._product(product_id, "product_id")
            v = Violations()
            if not 1 <= horizon <= MAX_HORIZON_DAYS:
                v.add("horizon_days", f"must be 1 to {MAX_HORIZON_DAYS} days, not {horizon}")
            start = start or today
            if start < today:
                v.add("start_date", f"{start} is before the site's today ({today})")
            elif (start - today).days > MAX_HORIZON_DAYS:
                v.add("start_date", f"must be within {MAX_HORIZON_DAYS} days of today")
            v.raise_if_any()
            days = (start - today).days + horizon
            forecast = simulate(self._inputs(session, site_id, product.id, today, days))
        return StockForecast(forecast.days[-horizon:])

    # --- reorder policy ------------------------------------------------------------------------

    def set_policy(
        self,
        session: Session,
        site_id: str,
        product_id: str,
        policy: Policy,
        etag: str,
        v: Violations,
    ) -> StoredPolicy:
        """``v`` arrives with the API's parse errors; a field it already names is not
        judged again (an unparsable size would also read "not a presentation")."""
        _collect(v, self._today, session, site_id, "policy.site_id")
        product = _collect(v, self._product, product_id, "policy.product_id")
        sizes = {p.grams for p in product.product.presentations} if product else None
        problems = validate_policy(policy, sizes or {policy.order_presentation_grams}, "policy")
        named = {x.field for x in v.items}
        v.extend(x for x in problems.items if x.field not in named)
        v.raise_if_any()
        assert product is not None
        now = self.clock.now()
        row = store.policy_row(session, site_id, product.id, for_update=True)
        if row is None:
            if etag:
                raise Aborted(
                    "no reorder policy exists yet for this site and product: omit the etag to"
                    " create one",
                    metadata={"current_etag": ""},
                    reason="STALE_ETAG",
                )
            row = store.insert_policy(
                session,
                ReorderPolicyRow(
                    site_id=site_id,
                    product_id=product.id,
                    revision=1,
                    updated_at=now,
                    **vars(policy),
                ),
            )
            return _policy(row)
        if etag:
            check_etag(etag, row.revision, field="policy.etag", resource="reorder policy")
        for name, value in vars(policy).items():
            setattr(row, name, value)
        row.revision += 1
        row.updated_at = now
        session.flush()
        return _policy(row)

    def get_policy(self, site_id: str, product_id: str) -> StoredPolicy:
        with self.db.read() as session:
            self._today(session, site_id, "site_id")
            product = self._product(product_id, "product_id")
            row = store.policy_row(session, site_id, product.id)
            if row is None:
                raise NotFound("reorder policy", f"{site_id}/{product.id}")
            return _policy(row)

    # --- suggestions and the daily check -------------------------------------------------------

    def suggestions(
        self, session: Session, site_id: str, as_of: dt.date | None, field: str = "site_id"
    ) -> list[Suggestion]:
        today = self._today(session, site_id, field)
        as_of = as_of or today
        if not today <= as_of <= today + dt.timedelta(days=MAX_HORIZON_DAYS):
            raise InvalidArgument(
                [FieldViolation("as_of", f"must be from the site's today ({today}) to a year on")]
            )
        found = []
        for stored in map(_policy, store.site_policies(session, site_id)):
            policy = stored.policy
            days = (as_of - today).days + policy.cover_days
            inputs = self._inputs(session, site_id, stored.product_id, today, days)
            order = reorder(policy, inputs, simulate(inputs), as_of)
            if order is None:
                continue
            product = self.catalogue.get(stored.product_id)
            cost, note = self._cost(session, site_id, product, policy, order.vials)
            found.append(
                Suggestion(
                    site_id, product, policy, order, cost, f"{explain(order, policy)} {note}"
                )
            )
        return found

    def current_suggestions(self, site_id: str, as_of: dt.date | None) -> list[Suggestion]:
        """ListReorderSuggestions: what the reorder check would raise, without raising it."""
        with self.db.read() as session:
            return self.suggestions(session, site_id, as_of)

    def _cost(
        self, session: Session, site_id: str, product: StoredProduct, policy: Policy, vials: int
    ) -> tuple[tuple[Decimal, str] | None, str]:
        """Latest unit cost this site paid for the vial size, else the catalogue's price."""
        size = policy.order_presentation_grams
        paid = store.latest_receipt_cost(session, site_id, product.id, size)
        if paid is not None:
            unit, currency = paid
            return (unit * vials, currency), (
                f"Cost at the last price paid here: {_g(unit)} {currency} per {_g(size)} g vial."
            )
        price = product.product.price_per_gram
        if price is None:
            return None, (
                f"No cost estimate: no {_g(size)} g vial was received here and the catalogue"
                " has no price."
            )
        return (price.amount * size * vials, price.currency), (
            f"Cost from the catalogue price of {_g(price.amount)} {price.currency}/g (no {_g(size)}"
            " g vial received here yet)."
        )

    def check_reorder(self, site_id: str, as_of: dt.date | None = None) -> list[Suggestion]:
        """The daily reorder job: REORDER_DUE per suggestion and LOW_STOCK per product below
        its safety stock, in one transaction; dedupe keys make a re-run of a day a no-op."""
        with self.db.write() as session:
            found = self.suggestions(session, site_id, as_of)
            day = as_of or self._today(session, site_id, "site_id")
            now = self.clock.now()
            for s in found:
                self.outbox.emit(
                    session,
                    "REORDER_DUE",
                    _reorder_payload(s),
                    now,
                    f"REORDER_DUE:{site_id}:{s.product.id}:{day.isoformat()}",
                )
            for stored in map(_policy, store.site_policies(session, site_id)):
                lots = store.in_date_lots(session, site_id, stored.product_id, day)
                available = sum(
                    (
                        max(x.on_hand_vials - x.reserved_vials, 0) * x.presentation_grams
                        for x in lots
                    ),
                    Decimal(0),
                )
                if low_stock(available, stored.policy):
                    product = self.catalogue.get(stored.product_id)
                    self.outbox.emit(
                        session,
                        "LOW_STOCK",
                        {
                            "site_id": site_id,
                            "product_id": product.id,
                            "product_code": product.product.code,
                            "brand": product.product.brand,
                            "as_of": day.isoformat(),
                            "available_grams": _g(available),
                            "safety_stock_grams": _g(stored.policy.safety_stock_grams),
                            "message": (
                                f"{product.product.brand} at {site_id}: {_g(available)} g"
                                f" available in date, below the safety stock of"
                                f" {_g(stored.policy.safety_stock_grams)} g."
                            ),
                        },
                        now,
                        f"LOW_STOCK:{site_id}:{product.id}:{day.isoformat()}",
                    )
            return found


def _reorder_payload(s: Suggestion) -> dict[str, object]:
    o = s.order
    return {
        "site_id": s.site_id,
        "product_id": s.product.id,
        "product_code": s.product.product.code,
        "brand": s.product.product.brand,
        "as_of": o.as_of.isoformat(),
        "presentation_grams": _g(s.policy.order_presentation_grams),
        "vials": o.vials,
        "grams": _g(o.grams),
        "estimated_cost": ({"amount": _g(s.cost[0]), "currency": s.cost[1]} if s.cost else None),
        "stockout_date": o.stockout_date.isoformat() if o.stockout_date else None,
        "order_by_date": o.order_by_date.isoformat() if o.order_by_date else None,
        "reason": s.reason,
    }
