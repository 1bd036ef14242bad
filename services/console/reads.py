"""What the console's pages and the ``infusion`` command line read from the services, as the
user whose calls these are: sites, names, the chair board, the due list, expiring lots and the
pick list, put together from the services' answers with views.py's arithmetic. No HTTP here:
the pages (pages.py) render these, the CLI (services/cli) prints them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date, to_date
from services.console import views
from services.console.backend import UserCalls, pages

MAX_PAGE = 200
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
    """Patient id -> "Family, Given", read through the scheduler's patient reads."""
    names: dict[str, str] = {}
    for patient_id in sorted(set(patient_ids)):
        if not patient_id:
            continue
        try:
            patient = calls.scheduler.GetPatient(pb.GetPatientRequest(id=patient_id)).patient
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.NOT_FOUND:
                names[patient_id] = "(unknown patient)"
                continue
            raise
        names[patient_id] = f"{patient.family_name}, {patient.given_name}".strip(", ")
    return names


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

    @property
    def css(self) -> str:
        return self.status.replace(" ", "-").replace("for-", "")


@dataclass(frozen=True)
class Row:
    chair: str
    blocks: list[Block]


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
                )
            )
        rows.append(Row(chair.display_name or chair.chair_id, blocks))
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
