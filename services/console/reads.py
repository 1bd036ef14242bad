"""What the console's pages and the ``infusion`` command line read from the services, as the
user whose calls these are: sites, names, the chair board, the due list, expiring lots and the
pick list, put together from the services' answers with views.py's arithmetic. No HTTP here:
the pages (pages.py) render these, the CLI (services/cli) prints them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date, from_money, to_date, to_money
from services.console import views
from services.console.backend import UserCalls, pages

MAX_PAGE = 200
BATCH_IDS = 500  # the most ids ListPatients takes in one call
Sees = Callable[[str], bool]  # whether the user works at a site


def sites(calls: UserCalls, organisation: str, sees: Sees) -> list[pb.Site]:
    """The scheduler's sites of the organisation that the user works at."""
    found = pages(
        lambda token: calls.scheduler.ListSites(
            pb.ListSitesRequest(organisation_id=organisation, page_size=MAX_PAGE, page_token=token)
        ),
        "sites",
    )
    return [s for s in found if sees(s.id)]


def stock_sites(calls: UserCalls, sees: Sees) -> list[inv.StockSite]:
    """The inventory's stock sites the user works at (of their organisation: the inventory
    lists no other)."""
    found = pages(
        lambda token: calls.inventory.ListStockSites(
            inv.ListStockSitesRequest(page_size=MAX_PAGE, page_token=token)
        ),
        "sites",
    )
    return [s for s in found if sees(s.id)]


def patient_names(calls: UserCalls, patient_ids: Iterable[str]) -> dict[str, str]:
    """Patient id -> "Family, Given", read through the scheduler's patient list filtered by
    id: one call (and one audit record) for a page of many patients, not one each."""
    wanted = sorted({p for p in patient_ids if p})
    names: dict[str, str] = {}

    def batch(chunk: list[str]) -> Iterator[Any]:
        return pages(
            lambda token: calls.scheduler.ListPatients(
                pb.ListPatientsRequest(ids=chunk, page_size=len(chunk), page_token=token)
            ),
            "patients",
        )

    for first in range(0, len(wanted), BATCH_IDS):
        for patient in batch(wanted[first : first + BATCH_IDS]):
            names[patient.id] = f"{patient.family_name}, {patient.given_name}".strip(", ")
    return {p: names.get(p, "(unknown patient)") for p in wanted}


def product_names(calls: UserCalls) -> dict[str, str]:
    """Product id -> brand (the catalogue: every signed-in user may read it)."""
    found = pages(
        lambda token: calls.inventory.ListProducts(
            inv.ListProductsRequest(page_size=MAX_PAGE, page_token=token, include_inactive=True)
        ),
        "products",
    )
    return {p.id: p.brand or p.code for p in found}


def minutes(time_of_day: Any) -> int:
    return views.minutes(time_of_day.hours, time_of_day.minutes)


# -- the chair board ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    appointment_id: str
    patient: str
    product: str
    dose: str
    status: str
    start: str
    end: str
    left: float
    width: float
    kind: str
    state: int = 0  # the appointment's own status number (scheduler.v1.AppointmentStatus)
    etag: str = ""  # its revision: a move carries it, the chair actions' request ids too

    @property
    def css(self) -> str:
        return self.status.replace(" ", "-").replace("for-", "")


@dataclass(frozen=True)
class Row:
    chair: str
    blocks: list[Block]
    chair_id: str = ""


@dataclass(frozen=True)
class Board:
    rows: list[Row]
    load: list[views.HourLoad]
    axis: views.Interval
    hour_marks: list[tuple[str, float]]


def chair_board(calls: UserCalls, site: pb.Site, day: dt.date) -> Board:
    """The site's chairs for ``day``: each appointment, hold and chair block placed on the
    day's axis with the patient's name, the product's brand, the dose and the status; the
    nurse load per hour from the appointments that occupy a chair."""
    board = calls.scheduler.GetChairBoard(
        pb.GetChairBoardRequest(site_id=site.id, local_date=from_date(day))
    )
    axis = views.Interval(minutes(board.open), minutes(board.close))
    if axis.end <= axis.start:  # closed that day: an empty working day to draw on
        axis = views.Interval(8 * 60, 18 * 60)
    items = [i for chair in board.chairs for i in chair.items if i.kind in ("APPOINTMENT", "HOLD")]
    names = patient_names(calls, (i.appointment.patient_id for i in items))
    products = product_names(calls) if items else {}
    rows = []
    busy = []
    for chair in board.chairs:
        blocks = []
        for item in chair.items:
            if item.kind not in ("APPOINTMENT", "HOLD", "BLOCK"):
                continue
            interval = views.Interval(minutes(item.local_start), minutes(item.local_end))
            placed = views.place(interval, axis)
            a = item.appointment
            if item.kind == "BLOCK":
                label, status = item.detail or "out of service", "blocked"
            else:
                label = names.get(a.patient_id, a.patient_id)
                status = views.status_label(a.status, a.stock_at_risk)
                if a.status not in (6, 7):  # cancelled and no-show leave the chair free
                    busy.append(interval)
            blocks.append(
                Block(
                    appointment_id=a.id if item.kind != "BLOCK" else "",
                    patient=label,
                    product=products.get(a.product_id, a.product_id),
                    dose=f"{a.dose_grams} g" if a.dose_grams else "",
                    status=status,
                    start=views.clock(interval.start),
                    end=views.clock(interval.end),
                    left=placed.left,
                    width=placed.width,
                    kind=item.kind,
                    state=a.status if item.kind != "BLOCK" else 0,
                    etag=a.etag if item.kind != "BLOCK" else "",
                )
            )
        rows.append(Row(chair.display_name or chair.chair_id, blocks, chair.chair_id))
    capacity = site.capacity
    shifts = [
        views.Shift(s.day, minutes(s.start), minutes(s.end), s.nurses)
        for s in capacity.nurse_shifts
    ]
    load = views.nurse_load(busy, axis, shifts, capacity.nurse_ratio or 4, day)
    marks = [
        (views.clock(h), views.place(views.Interval(h, h), axis).left) for h in views.hours(axis)
    ]
    return Board(rows, load, axis, marks)


# -- the due list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueRow:
    plan: str
    patient: str
    product: str
    course: str
    due: dt.date
    window: tuple[dt.date, dt.date]
    overdue: bool
    booked: str
    patient_id: str = ""


def offered_slots(
    calls: UserCalls, site_id: str, answer: pb.FindSlotsResponse
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """FindSlots' answer as the slot pages list it: each free slot (day, times, the chair by
    name, nurse load, distance from the due date, stock note) and why days offer nothing."""
    chairs = {
        ch.id: ch.display_name
        for ch in calls.scheduler.ListChairs(
            pb.ListChairsRequest(site_id=site_id, page_size=MAX_PAGE)
        ).chairs
    }
    offered = [
        {
            "chair_id": s.chair_id,
            "chair": chairs.get(s.chair_id, s.chair_id),
            "date": to_date(s.local_date),
            "start": views.clock(minutes(s.local_start)),
            "end": views.clock(minutes(s.local_end)),
            "nurse_load": f"{s.nurse_load}/{s.nurse_capacity}" if s.nurse_capacity else "",
            "days_from_due": s.days_from_due,
            "stock_note": s.stock_note if s.stock_short else "",
        }
        for s in answer.slots
    ]
    limits = [
        {
            "date": to_date(d.local_date),
            "limit": d.limit.replace("_", " ").lower(),
            "detail": d.detail,
        }
        for d in answer.day_limits
    ]
    return offered, limits


def free_chair_times(
    calls: UserCalls,
    site_id: str,
    days: Iterable[dt.date],
    length: int,
    keep: str = "",
    step: int = 30,
    most: int = 40,
) -> list[dict[str, Any]]:
    """Where an appointment of ``length`` minutes could go on ``days``: each chair's free
    times on the day's board (every ``step`` minutes from opening, ending by closing, clear of
    appointments, holds and chair blocks; appointment ``keep`` counts as free, it is the one
    being moved). The scheduler still checks its own rules (nurses, start limits, the plan's
    window) when the booking moves there."""
    found: list[dict[str, Any]] = []
    for day in days:
        board = calls.scheduler.GetChairBoard(
            pb.GetChairBoardRequest(site_id=site_id, local_date=from_date(day))
        )
        opens, closes = minutes(board.open), minutes(board.close)
        for chair in board.chairs:
            taken = [
                (minutes(i.local_start), minutes(i.local_end))
                for i in chair.items
                if i.kind in ("APPOINTMENT", "HOLD", "BLOCK")
                and i.appointment.id != keep
                and i.appointment.status not in (6, 7)
            ]
            for start in range(opens, closes - length + 1, step):
                if all(start + length <= a or start >= b for a, b in taken):
                    found.append(
                        {
                            "chair_id": chair.chair_id,
                            "chair": chair.display_name or chair.chair_id,
                            "date": day,
                            "start": views.clock(start),
                            "end": views.clock(start + length),
                        }
                    )
                    if len(found) >= most:
                        return found
    return found


def due_list(calls: UserCalls, site_id: str, horizon_days: int) -> list[DueRow]:
    """Every infusion due or overdue within ``horizon_days`` at the site, by due date."""
    found = list(
        pages(
            lambda token: calls.scheduler.ListDueInfusions(
                pb.ListDueInfusionsRequest(
                    site_id=site_id,
                    horizon_days=horizon_days,
                    page_size=MAX_PAGE,
                    page_token=token,
                )
            ),
            "due_infusions",
        )
    )
    names = patient_names(calls, (d.patient_id for d in found))
    products = product_names(calls) if found else {}
    return [
        DueRow(
            plan=d.therapy_plan_id,
            patient=names.get(d.patient_id, d.patient_id),
            product=products.get(d.product_id, d.product_id),
            course=f"induction day {d.course_day}" if d.course_day else "maintenance",
            due=to_date(d.due_date),
            window=(to_date(d.window_start), to_date(d.window_end)),
            overdue=d.overdue,
            booked=d.booked_appointment_id,
            patient_id=d.patient_id,
        )
        for d in found
    ]


# -- the pharmacy ------------------------------------------------------------------------------


def expiring_lots(
    calls: UserCalls, site_id: str, today: dt.date, within_days: int
) -> list[views.ExpiringLot]:
    lots = pages(
        lambda token: calls.inventory.ListLots(
            inv.ListLotsRequest(site_id=site_id, page_size=MAX_PAGE, page_token=token)
        ),
        "lots",
    )
    products = product_names(calls)
    return views.expiring(
        (
            (
                lot.lot_number,
                products.get(lot.product_id, lot.product_id),
                to_date(lot.expiry_date),
                lot.on_hand_vials,
                lot.reserved_vials,
            )
            for lot in lots
        ),
        today,
        within_days,
    )


@dataclass(frozen=True)
class PickLine:
    appointment_id: str
    patient_id: str
    product: str  # the product's id
    dose_grams: str
    lot_number: str
    vials: int
    expiry: dt.date | None
    state: str
    note: str
    product_name: str = ""


def pick_list(calls: UserCalls, site_id: str, day: dt.date) -> list[PickLine]:
    """The vials the day's reservations at the site hold, a line per reservation and lot (a
    reservation without vials, at risk, as one line without a lot)."""
    reservations = pages(
        lambda token: calls.inventory.ListReservations(
            inv.ListReservationsRequest(
                site_id=site_id,
                needed_from=from_date(day),
                needed_to=from_date(day),
                page_size=MAX_PAGE,
                page_token=token,
            )
        ),
        "reservations",
    )
    products = product_names(calls)
    lines: list[PickLine] = []
    for r in reservations:
        state = inv.ReservationState.Name(r.state).removeprefix("RESERVATION_STATE_").lower()
        if state == "released":
            continue
        if not r.lines:
            lines.append(
                PickLine(
                    r.appointment_id,
                    r.patient_id,
                    r.product_id,
                    r.grams,
                    "",
                    0,
                    None,
                    state,
                    r.at_risk_reason,
                    products.get(r.product_id, r.product_id),
                )
            )
        for line in r.lines:
            product = line.product_id or r.product_id
            lines.append(
                PickLine(
                    r.appointment_id,
                    r.patient_id,
                    product,
                    r.grams,
                    line.lot_number,
                    line.vials,
                    to_date(line.expiry_date) if line.HasField("expiry_date") else None,
                    state,
                    r.at_risk_reason,
                    products.get(product, product),
                )
            )
    lines.sort(key=lambda x: (x.product_name, x.lot_number, x.appointment_id))
    return lines


def _state(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", " ")


def _money(value: Any) -> str:
    """ "GBP 1234.50", or empty when unset."""
    if not value.currency_code:
        return ""
    return f"{value.currency_code} {from_money(value):.2f}"


# -- stock levels ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StockRow:
    site_id: str
    site: str
    product_id: str
    product: str
    on_hand_vials: int
    reserved_vials: int
    available_vials: int
    on_hand_grams: str
    available_grams: str
    lots: int


def stock_levels(calls: UserCalls, stock_sites_: Iterable[inv.StockSite]) -> list[StockRow]:
    """Per site and product: vials on hand, reserved and available (the ledger's sums, in-date
    lots only) and the grams they hold, with how many lots make them up."""
    products = product_names(calls)
    rows = []
    for site in stock_sites_:
        levels = calls.inventory.GetStockLevels(inv.GetStockLevelsRequest(site_id=site.id))
        lots: dict[str, int] = {}
        for lot in levels.lots:
            if lot.on_hand_vials > 0:
                lots[lot.product_id] = lots.get(lot.product_id, 0) + 1
        for p in levels.products:
            rows.append(
                StockRow(
                    site.id,
                    site.display_name or site.id,
                    p.product_id,
                    products.get(p.product_id, p.product_id),
                    p.on_hand_vials,
                    p.reserved_vials,
                    p.available_vials,
                    p.on_hand_grams,
                    p.available_grams,
                    lots.get(p.product_id, 0),
                )
            )
    rows.sort(key=lambda r: (r.site, r.product))
    return rows


# -- receiving ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanPreview:
    gtin: str
    expiry: dt.date | None
    lot_number: str
    serial: str
    product_id: str  # empty: no product of the catalogue has this GTIN
    product: str
    presentation_grams: str


def preview_scan(calls: UserCalls, element_string: str) -> ScanPreview:
    """What a scanned GS1 element string says ((01) GTIN, (17) expiry, (10) lot, (21) serial:
    the inventory's own reading, services/common/gs1.py, with biip) and which
    product of the catalogue the GTIN is. ScanError when it is not a usable scan."""
    from services.common.gs1 import read_scan

    scan = read_scan(element_string)
    found = pages(
        lambda token: calls.inventory.ListProducts(
            inv.ListProductsRequest(page_size=MAX_PAGE, page_token=token)
        ),
        "products",
    )
    for product in found:
        for presentation in product.presentations:
            if presentation.gtin and presentation.gtin.zfill(14) == scan.gtin:
                return ScanPreview(
                    scan.gtin,
                    scan.expiry_date,
                    scan.lot_number,
                    scan.serial,
                    product.id,
                    product.brand or product.code,
                    presentation.grams,
                )
    return ScanPreview(scan.gtin, scan.expiry_date, scan.lot_number, scan.serial, "", "", "")


@dataclass(frozen=True)
class Received:
    lot_id: str
    site_id: str
    product_id: str
    product: str
    lot_number: str
    expiry: dt.date
    presentation_grams: str
    vials: int
    on_hand_vials: int


def receive(
    calls: UserCalls,
    site_id: str,
    element_string: str,
    vials: int,
    unit_cost: Decimal,
    currency: str,
    supplier: str,
    request_id: str,
) -> Received:
    """ReceiveStock with the scanned string (the inventory reads GTIN, expiry and lot from
    it); ``request_id`` makes a repeated submit one receipt."""
    answer = calls.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id=site_id,
            gs1_element_string=element_string,
            vials=vials,
            unit_cost=to_money(unit_cost, currency),
            supplier=supplier,
            request_id=request_id,
        )
    )
    lot = answer.lot
    return Received(
        lot.id,
        lot.site_id,
        lot.product_id,
        product_names(calls).get(lot.product_id, lot.product_id),
        lot.lot_number,
        to_date(lot.expiry_date),
        lot.presentation_grams,
        answer.movement.on_hand_delta_vials,
        lot.on_hand_vials,
    )


# -- forecast, reorder, purchase orders --------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    product_id: str
    product: str
    days: list[views.ForecastDay]
    stockout: dt.date | None


def forecast(calls: UserCalls, site_id: str, product_id: str, horizon_days: int) -> Forecast:
    answer = calls.inventory.GetStockForecast(
        inv.GetStockForecastRequest(
            site_id=site_id, product_id=product_id, horizon_days=horizon_days
        )
    )

    def grams(text: str) -> Decimal:
        return Decimal(text) if text else Decimal(0)

    days = [
        views.ForecastDay(
            to_date(d.date),
            grams(d.in_date_on_hand_grams),
            grams(d.reserved_demand_grams),
            grams(d.forecast_demand_grams),
            grams(d.projected_available_grams),
            grams(d.shortfall_grams),
        )
        for d in answer.days
    ]
    stockout = (
        to_date(answer.first_stockout_date) if answer.HasField("first_stockout_date") else None
    )
    return Forecast(product_id, product_names(calls).get(product_id, product_id), days, stockout)


@dataclass(frozen=True)
class Suggestion:
    product_id: str
    product: str
    presentation_grams: str
    vials: int
    grams: str
    estimated_cost: str
    stockout: dt.date | None
    order_by: dt.date | None
    reason: str


@dataclass(frozen=True)
class Order:
    id: str
    supplier: str
    reference: str
    state: str
    expected: dt.date | None
    lines: list[str]  # "Privigen 10 g: 4 of 10 vials received"


def reorder(calls: UserCalls, site_id: str) -> tuple[list[Suggestion], list[Order]]:
    """The site's reorder suggestions (its reorder policies against the forecast) and its
    purchase orders, newest first as the inventory lists them."""
    products = product_names(calls)
    suggestions = [
        Suggestion(
            s.product_id,
            products.get(s.product_id, s.product_id),
            s.presentation_grams,
            s.vials,
            s.grams,
            _money(s.estimated_cost),
            to_date(s.stockout_date) if s.HasField("stockout_date") else None,
            to_date(s.order_by_date) if s.HasField("order_by_date") else None,
            s.reason,
        )
        for s in calls.inventory.ListReorderSuggestions(
            inv.ListReorderSuggestionsRequest(site_id=site_id)
        ).suggestions
    ]
    orders = [
        Order(
            o.id,
            o.supplier,
            o.reference,
            _state(inv.PurchaseOrderState, o.state, "PURCHASE_ORDER_STATE_"),
            to_date(o.expected_date) if o.HasField("expected_date") else None,
            [
                f"{products.get(x.product_id, x.product_id)} {x.presentation_grams} g: "
                f"{x.vials_received} of {x.vials_ordered} vials received"
                for x in o.lines
            ],
        )
        for o in pages(
            lambda token: calls.inventory.ListPurchaseOrders(
                inv.ListPurchaseOrdersRequest(site_id=site_id, page_size=MAX_PAGE, page_token=token)
            ),
            "purchase_orders",
        )
    ]
    return suggestions, orders


# -- recall ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldLot:
    site_id: str
    lot_id: str
    state: str
    expiry: dt.date
    on_hand_vials: int
    reserved_vials: int


@dataclass(frozen=True)
class Recipient:
    patient_id: str
    appointment_id: str
    site_id: str
    administered: str  # UTC, "2026-11-24 10:15"
    vials: int
    grams: str


@dataclass(frozen=True)
class Trace:
    product_id: str
    product: str
    lot_number: str
    sites: list[HeldLot]
    recipients: list[Recipient]


def recall_trace(calls: UserCalls, product_id: str, lot_number: str, sees: Sees) -> Trace:
    """Where a lot is (each site's stock of it) and who received it (the inventory's
    administration trace, ListLotRecipients), at the user's sites."""
    held = [
        HeldLot(
            lot.site_id,
            lot.id,
            _state(inv.LotState, lot.state, "LOT_STATE_"),
            to_date(lot.expiry_date),
            lot.on_hand_vials,
            lot.reserved_vials,
        )
        for lot in pages(
            lambda token: calls.inventory.ListLots(
                inv.ListLotsRequest(
                    product_id=product_id,
                    lot_number=lot_number,
                    page_size=MAX_PAGE,
                    page_token=token,
                )
            ),
            "lots",
        )
        if sees(lot.site_id)
    ]
    recipients = [
        Recipient(
            a.patient_id,
            a.appointment_id,
            a.site_id,
            a.administered_time.ToDatetime(dt.UTC).strftime("%Y-%m-%d %H:%M"),
            a.vials,
            a.grams_administered,
        )
        for a in pages(
            lambda token: calls.inventory.ListLotRecipients(
                inv.ListLotRecipientsRequest(
                    product_id=product_id,
                    lot_number=lot_number,
                    page_size=MAX_PAGE,
                    page_token=token,
                )
            ),
            "administrations",
        )
        if sees(a.site_id)
    ]
    return Trace(
        product_id,
        product_names(calls).get(product_id, product_id),
        lot_number,
        sorted(held, key=lambda h: h.site_id),
        sorted(recipients, key=lambda r: (r.administered, r.patient_id)),
    )


# -- the patient page --------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanVersion:
    plan_id: str
    version: int
    status: str
    product: str
    dose: str  # "0.4 g/kg every 28 days" or "30 g every 14 days"
    changed: str  # UTC day of the version


@dataclass(frozen=True)
class Dose:
    plan_id: str
    product: str
    course: str
    total_grams: str
    dosing_weight: str
    days: list[str]  # "day 1, 2026-11-25: 32 g (3 x 10 g + 1 x 2 g vials), 300 chair minutes"
    rationale: list[str]
    rules: list[str]


@dataclass(frozen=True)
class Visit:
    appointment_id: str
    day: dt.date
    start: str
    status: str
    dose_grams: str
    grams_given: str
    lots: str  # "P-123 x 3, P-124 x 1"
    reminders: str = ""  # "72h before (2026-11-21 09:00 UTC): scheduled; ..."


@dataclass(frozen=True)
class OutcomeRow:
    day: dt.date
    measure: str
    value: str
    note: str


@dataclass
class PatientRecord:
    patient: pb.Patient
    plans: list[PlanVersion]
    doses: list[Dose] | None = None  # None: the user may not calculate doses
    measurements: list[pb.Measurement] | None = None
    upcoming: list[Visit] | None = None
    past: list[Visit] | None = None
    outcomes: list[OutcomeRow] | None = None
    grip: list[tuple[str, dt.date, Decimal]] | None = None
    reviews: list[Review] | None = None

    @property
    def latest(self) -> dict[str, int]:
        """Plan id -> its newest version (the one proposals and reviews start from)."""
        newest: dict[str, int] = {}
        for v in self.plans:
            newest[v.plan_id] = max(newest.get(v.plan_id, 0), v.version)
        return newest


@dataclass(frozen=True)
class Review:
    plan_id: str
    due: dt.date | None
    state: str  # not yet, due, overdue, ended
    explanation: list[str]


def _dose_text(plan: pb.TherapyPlan) -> str:
    unit = "g/kg" if plan.dose_basis == pb.DOSE_BASIS_G_PER_KG else "g"
    return f"{plan.maintenance_dose} {unit} every {plan.interval_days} days"


def patient_record(
    calls: UserCalls, patient_id: str, may: Callable[[str], bool], today: dt.date
) -> PatientRecord:
    """The patient, every version of each plan, and what the user's permissions (``may``)
    open: the next dose calculated with its rationale, measurements, bookings (past ones with
    the lots scanned at the chair) and outcome records with the grip strength readings. The
    dose is calculated for ``today`` (the measurements of that day)."""
    patient = calls.scheduler.GetPatient(pb.GetPatientRequest(id=patient_id)).patient
    products = product_names(calls)
    plans = list(
        pages(
            lambda token: calls.scheduler.ListTherapyPlans(
                pb.ListTherapyPlansRequest(
                    patient_id=patient_id, page_size=MAX_PAGE, page_token=token
                )
            ),
            "therapy_plans",
        )
    )
    versions = []
    for plan in plans:
        for number in range(plan.version, 0, -1):
            v = (
                plan
                if number == plan.version
                else calls.scheduler.GetTherapyPlan(
                    pb.GetTherapyPlanRequest(id=plan.id, version=number)
                ).therapy_plan
            )
            versions.append(
                PlanVersion(
                    plan.id,
                    number,
                    _state(pb.PlanStatus, v.status, "PLAN_STATUS_"),
                    products.get(v.product_id, v.product_id),
                    _dose_text(v),
                    v.update_time.ToDatetime(dt.UTC).date().isoformat()
                    if v.HasField("update_time")
                    else "",
                )
            )
    record = PatientRecord(patient, versions)
    if may("scheduler.doses.calculate"):
        record.doses = [
            _dose(
                calls.scheduler.CalculateDose(
                    pb.CalculateDoseRequest(therapy_plan_id=p.id, dosing_date=from_date(today))
                )
            )
            for p in plans
            if p.status == pb.PLAN_STATUS_ACTIVE
        ]
    if may("scheduler.measurements.read"):
        record.measurements = list(
            calls.scheduler.ListMeasurements(
                pb.ListMeasurementsRequest(patient_id=patient_id, page_size=20)
            ).measurements
        )
    if may("scheduler.appointments.read"):
        visits = [
            _visit(a, products)
            for a in pages(
                lambda token: calls.scheduler.ListAppointments(
                    pb.ListAppointmentsRequest(
                        patient_id=patient_id, page_size=MAX_PAGE, page_token=token
                    )
                ),
                "appointments",
            )
        ]
        record.upcoming = sorted(
            (v for v in visits if v.day >= today and v.status in ("booked", "held", "checked in")),
            key=lambda v: (v.day, v.start),
        )
        record.past = sorted(
            (v for v in visits if v.status in ("done", "in chair", "no-show")),
            key=lambda v: (v.day, v.start),
            reverse=True,
        )
    if may("scheduler.outcomes.read"):
        found = list(
            pages(
                lambda token: calls.scheduler.ListOutcomes(
                    pb.ListOutcomesRequest(
                        patient_id=patient_id, page_size=MAX_PAGE, page_token=token
                    )
                ),
                "outcomes",
            )
        )
        record.outcomes = [_outcome(o) for o in found]
        record.grip = [
            (
                f"{_state(pb.Hand, o.hand, 'HAND_')} hand",
                to_date(o.recorded_on),
                Decimal(o.value),
            )
            for o in found
            if o.measure == pb.OUTCOME_MEASURE_GRIP_STRENGTH and o.value
        ]
        # outcome reviews due within a year (and overdue ones) at the plans' sites
        mine = {p.id for p in plans}
        record.reviews = [
            Review(
                r.therapy_plan_id,
                to_date(r.due_date) if r.HasField("due_date") else None,
                _state(pb.ReviewState, r.state, "REVIEW_STATE_"),
                list(r.explanation),
            )
            for site_id in sorted({p.site_id for p in plans})
            for r in calls.scheduler.ListDueReviews(
                pb.ListDueReviewsRequest(site_id=site_id, horizon_days=366)
            ).due_reviews
            if r.therapy_plan_id in mine
        ]
    return record


def _dose(answer: pb.CalculateDoseResponse) -> Dose:
    c = answer.calculation
    days = []
    for d in c.days:
        vials = " + ".join(f"{v.count} x {v.grams} g" for v in d.vials)
        days.append(
            f"day {d.day}, {to_date(d.date)}: {d.rounded_grams} g ({vials} vials), "
            f"{d.chair_minutes} chair minutes"
        )
    w = c.dosing_weight
    weight = (
        f"{w.dosing_weight_kg} kg ({_state(pb.WeightPolicy, w.policy_applied, 'WEIGHT_POLICY_')})"
    )
    return Dose(
        c.therapy_plan_id,
        c.product_brand or c.product_id,
        _state(pb.CourseKind, c.course, "COURSE_KIND_"),
        c.total_grams,
        weight if w.dosing_weight_kg else "",
        days,
        list(c.rationale),
        list(c.rules_applied),
    )


def _visit(a: pb.Appointment, products: dict[str, str]) -> Visit:
    return Visit(
        a.id,
        to_date(a.local_date),
        views.clock(minutes(a.local_start)),
        views.status_label(a.status, False),
        a.dose_grams,
        a.grams_given,
        ", ".join(
            f"{products.get(s.product_id, '')} {s.lot_number} x {s.vials}".strip()
            for s in a.scanned_lots
        ),
        "; ".join(
            f"{r.offset} before ({r.due_time.ToDatetime(dt.UTC):%Y-%m-%d %H:%M} UTC): "
            f"{_state(pb.ReminderStatus, r.status, 'REMINDER_STATUS_')}"
            for r in a.reminders
        ),
    )


def _outcome(o: pb.OutcomeRecord) -> OutcomeRow:
    measure = _state(pb.OutcomeMeasure, o.measure, "OUTCOME_MEASURE_")
    if o.measure == pb.OUTCOME_MEASURE_GRIP_STRENGTH:
        value = f"{o.value} kg, {_state(pb.Hand, o.hand, 'HAND_')} hand"
    elif o.scale:
        value = f"{o.value} ({_state(pb.DisabilityScale, o.scale, 'DISABILITY_SCALE_')})"
    elif o.wearing_off_none:
        value = "none"
    else:
        value = o.value
    return OutcomeRow(to_date(o.recorded_on), measure, value, o.note)
