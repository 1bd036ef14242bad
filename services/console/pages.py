"""The console's pages: the chair board, the due list with slot search, booking and
cancelling, and the pharmacy's expiring lots and pick list. Every handler first asks for a
user allowed to open its page (app.Console.user), then reads through the services with that
user's token; the services' own checks (permissions, organisation and site scope) stay the
final word, and their refusals become the error page (app.rpc_error)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import grpc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date, to_date
from services.console import views
from services.console.auth import PAGE
from services.console.backend import UserCalls, pages

if TYPE_CHECKING:
    from services.console.app import Console
    from services.console.auth import User

MAX_PAGE = 200


def _app(request: Request) -> Console:
    from services.console.app import console

    return console(request)


def _calls(c: Console, user: User) -> UserCalls:
    return c.backend.as_user(user.token)


def _day(value: str | None, default: dt.date) -> dt.date:
    if not value:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"Not a date: {value!r} (YYYY-MM-DD).") from None


def _whole_number(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as a whole number, kept within [low, high]."""
    try:
        value = int(request.query_params.get(name, str(default)))
    except ValueError:
        raise HTTPException(400, f"{name}: a whole number.") from None
    return min(max(value, low), high)


def _local_today(c: Console, time_zone: str) -> dt.date:
    try:
        zone = ZoneInfo(time_zone)
    except (ValueError, KeyError):
        zone = ZoneInfo("UTC")
    return c.clock.now().astimezone(zone).date()


def _sites(calls: UserCalls, user: User) -> list[pb.Site]:
    """The scheduler's sites of the user's organisation that the user works at."""
    found = pages(
        lambda token: calls.scheduler.ListSites(
            pb.ListSitesRequest(
                organisation_id=user.organisation, page_size=MAX_PAGE, page_token=token
            )
        ),
        "sites",
    )
    return [s for s in found if user.sees_site(s.id)]


def _chosen(sites: list[Any], wanted: str | None) -> Any:
    if not sites:
        raise HTTPException(404, "No site of your organisation is open to you.")
    if wanted:
        for site in sites:
            if site.id == wanted:
                return site
        raise HTTPException(404, "No such site.")
    return sites[0]


def _names(calls: UserCalls, patient_ids: Iterable[str]) -> dict[str, str]:
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


def _products(calls: UserCalls) -> dict[str, str]:
    """Product id -> brand (the catalogue: every signed-in user may read it)."""
    from infusion.inventory.v1 import inventory_pb2 as inventory

    found = pages(
        lambda token: calls.inventory.ListProducts(
            inventory.ListProductsRequest(
                page_size=MAX_PAGE, page_token=token, include_inactive=True
            )
        ),
        "products",
    )
    return {p.id: p.brand or p.code for p in found}


# -- chair board -------------------------------------------------------------------------------


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


def _minutes(time_of_day: Any) -> int:
    return views.minutes(time_of_day.hours, time_of_day.minutes)


def board_view(c: Console, request: Request) -> dict[str, Any]:
    user = c.user(request, "board")
    calls = _calls(c, user)
    sites = _sites(calls, user)
    site = _chosen(sites, request.query_params.get("site"))
    day = _day(request.query_params.get("date"), _local_today(c, site.time_zone))
    board = calls.scheduler.GetChairBoard(
        pb.GetChairBoardRequest(site_id=site.id, local_date=from_date(day))
    )
    axis = views.Interval(_minutes(board.open), _minutes(board.close))
    if axis.end <= axis.start:  # closed that day: an empty working day to draw on
        axis = views.Interval(8 * 60, 18 * 60)
    items = [i for chair in board.chairs for i in chair.items if i.kind in ("APPOINTMENT", "HOLD")]
    names = _names(calls, (i.appointment.patient_id for i in items))
    products = _products(calls) if items else {}
    rows = []
    busy = []
    for chair in board.chairs:
        blocks = []
        for item in chair.items:
            if item.kind not in ("APPOINTMENT", "HOLD", "BLOCK"):
                continue
            interval = views.Interval(_minutes(item.local_start), _minutes(item.local_end))
            placed = views.place(interval, axis)
            a = item.appointment
            if item.kind == "BLOCK":
                label, status = item.detail or "out of service", "blocked"
            else:
                label = names.get(a.patient_id, a.patient_id)
                status = views.status_label(a.status, a.stock_at_risk)
                if a.status not in (6, 7):
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
        views.Shift(s.day, _minutes(s.start), _minutes(s.end), s.nurses)
        for s in capacity.nurse_shifts
    ]
    load = views.nurse_load(busy, axis, shifts, capacity.nurse_ratio or 4, day)
    hour_marks = [
        (views.clock(h), views.place(views.Interval(h, h), axis).left) for h in views.hours(axis)
    ]
    return {
        "site": site,
        "sites": sites,
        "day": day,
        "previous_day": day - dt.timedelta(days=1),
        "next_day": day + dt.timedelta(days=1),
        "rows": rows,
        "load": load,
        "hour_marks": hour_marks,
        "axis": (views.clock(axis.start), views.clock(axis.end)),
        "wall": request.query_params.get("wall") == "1",
        "can_book": user.may_open(PAGE["due"], c.roles),
        "refresh": c.settings.wall_refresh_seconds,
    }


def board(request: Request) -> Response:
    c = _app(request)
    values = board_view(c, request)
    template = "board_rows.html" if request.headers.get("HX-Request") else "board.html"
    return c.render(request, template, **values)


# -- due list, slots, booking ------------------------------------------------------------------


def due(request: Request) -> Response:
    c = _app(request)
    user = c.user(request, "due")
    calls = _calls(c, user)
    sites = _sites(calls, user)
    site = _chosen(sites, request.query_params.get("site"))
    horizon = _whole_number(request, "days", 28, 1, 366)
    found = list(
        pages(
            lambda token: calls.scheduler.ListDueInfusions(
                pb.ListDueInfusionsRequest(
                    site_id=site.id, horizon_days=horizon, page_size=MAX_PAGE, page_token=token
                )
            ),
            "due_infusions",
        )
    )
    names = _names(calls, (d.patient_id for d in found))
    products = _products(calls) if found else {}
    rows = [
        {
            "plan": d.therapy_plan_id,
            "patient": names.get(d.patient_id, d.patient_id),
            "product": products.get(d.product_id, d.product_id),
            "course": f"induction day {d.course_day}" if d.course_day else "maintenance",
            "due": to_date(d.due_date),
            "window": (to_date(d.window_start), to_date(d.window_end)),
            "overdue": d.overdue,
            "booked": d.booked_appointment_id,
        }
        for d in found
    ]
    return c.render(request, "due.html", site=site, sites=sites, rows=rows, days=horizon)


def slots(request: Request) -> Response:
    c = _app(request)
    user = c.user(request, "due")
    calls = _calls(c, user)
    plan_id = request.path_params["plan_id"]
    plan = calls.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan_id)).therapy_plan
    answer = calls.scheduler.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan_id, max_results=20))
    names = _names(calls, [plan.patient_id])
    chairs = {
        ch.id: ch.display_name
        for ch in calls.scheduler.ListChairs(
            pb.ListChairsRequest(site_id=plan.site_id, page_size=MAX_PAGE)
        ).chairs
    }
    offered = [
        {
            "chair_id": s.chair_id,
            "chair": chairs.get(s.chair_id, s.chair_id),
            "date": to_date(s.local_date),
            "start": views.clock(_minutes(s.local_start)),
            "end": views.clock(_minutes(s.local_end)),
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
    template = "slots_part.html" if request.headers.get("HX-Request") else "slots.html"
    return c.render(
        request,
        template,
        plan=plan,
        patient=names.get(plan.patient_id, plan.patient_id),
        slots=offered,
        limits=limits,
        due_date=to_date(answer.due_date) if answer.HasField("due_date") else None,
        stock_checked=answer.stock_checked,
    )


def _slot_form(values: dict[str, str]) -> dict[str, str]:
    wanted = ("plan", "chair_id", "date", "start")
    missing = [k for k in wanted if not values.get(k)]
    if missing:
        raise HTTPException(400, f"Missing: {', '.join(missing)}.")
    return {k: values[k] for k in wanted} | {"chair": values.get("chair", values["chair_id"])}


async def book_confirm(request: Request) -> Response:
    """Step one: what would be booked, and a button to book it (or go back)."""
    from services.console.app import check_csrf

    c = _app(request)
    c.user(request, "due")
    slot = _slot_form(await check_csrf(request))
    slot["patient"] = (await request.form()).get("patient", "")  # type: ignore[assignment]
    return c.render(request, "book_confirm.html", slot=slot, request_id=str(uuid.uuid4()))


async def book(request: Request) -> Response:
    """Step two: the booking itself (the request id makes a double click one booking)."""
    from starlette.concurrency import run_in_threadpool

    from services.console.app import check_csrf

    c = _app(request)
    user = c.user(request, "due")
    values = await check_csrf(request)
    slot = _slot_form(values)
    try:
        day = dt.date.fromisoformat(slot["date"])
        hours_, minutes_ = (int(x) for x in slot["start"].split(":"))
    except ValueError:
        raise HTTPException(400, "The slot's date or time is not readable.") from None
    from google.type import timeofday_pb2

    request_id = values.get("request_id") or str(uuid.uuid4())
    calls = _calls(c, user)
    booked = await run_in_threadpool(
        calls.scheduler.BookAppointment,
        pb.BookAppointmentRequest(
            therapy_plan_id=slot["plan"],
            chair_id=slot["chair_id"],
            local_date=from_date(day),
            local_start=timeofday_pb2.TimeOfDay(hours=hours_, minutes=minutes_),
            request_id=f"console-{request_id}"[:128],
        ),
    )
    a = booked.appointment
    return RedirectResponse(
        f"/board?site={a.site_id}&date={to_date(a.local_date).isoformat()}&booked={a.id}",
        status_code=303,
    )


async def cancel_confirm(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    from services.console.app import check_csrf

    c = _app(request)
    user = c.user(request, "due")
    await check_csrf(request)
    calls = _calls(c, user)
    appointment = (
        await run_in_threadpool(
            calls.scheduler.GetAppointment,
            pb.GetAppointmentRequest(id=request.path_params["appointment_id"]),
        )
    ).appointment
    names = await run_in_threadpool(_names, calls, [appointment.patient_id])
    return c.render(
        request,
        "cancel_confirm.html",
        appointment=appointment,
        patient=names.get(appointment.patient_id, ""),
        day=to_date(appointment.local_date),
        start=views.clock(_minutes(appointment.local_start)),
        request_id=str(uuid.uuid4()),
    )


async def cancel(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    from services.console.app import check_csrf

    c = _app(request)
    user = c.user(request, "due")
    values = await check_csrf(request)
    calls = _calls(c, user)
    cancelled = (
        await run_in_threadpool(
            calls.scheduler.CancelAppointment,
            pb.CancelAppointmentRequest(
                id=request.path_params["appointment_id"],
                reason=values.get("reason", "")[:1000] or "cancelled at the console",
                request_id=f"console-{values.get('request_id') or uuid.uuid4()}"[:128],
            ),
        )
    ).appointment
    return RedirectResponse(
        f"/board?site={cancelled.site_id}&date={to_date(cancelled.local_date).isoformat()}",
        status_code=303,
    )


# -- pharmacy ----------------------------------------------------------------------------------


def _stock_sites(calls: UserCalls, user: User) -> list[inv.StockSite]:
    found = pages(
        lambda token: calls.inventory.ListStockSites(
            inv.ListStockSitesRequest(page_size=MAX_PAGE, page_token=token)
        ),
        "sites",
    )
    return [s for s in found if user.sees_site(s.id)]


def pharmacy(request: Request) -> Response:
    c = _app(request)
    user = c.user(request, "pharmacy")
    calls = _calls(c, user)
    sites = _stock_sites(calls, user)
    site = _chosen(sites, request.query_params.get("site"))
    within = _whole_number(request, "days", 60, 0, 3650)
    today = _local_today(c, site.time_zone)
    lots = pages(
        lambda token: calls.inventory.ListLots(
            inv.ListLotsRequest(site_id=site.id, page_size=MAX_PAGE, page_token=token)
        ),
        "lots",
    )
    products = _products(calls)
    rows = views.expiring(
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
        within,
    )
    return c.render(
        request, "pharmacy.html", site=site, sites=sites, lots=rows, days=within, today=today
    )


@dataclass(frozen=True)
class PickLine:
    appointment_id: str
    patient_id: str
    product: str
    dose_grams: str
    lot_number: str
    vials: int
    expiry: dt.date | None
    state: str
    note: str
    product_name: str = ""


def pick_lines(c: Console, request: Request) -> tuple[Any, list[Any], dt.date, list[PickLine]]:
    user = c.user(request, "pharmacy")
    calls = _calls(c, user)
    sites = _stock_sites(calls, user)
    site = _chosen(sites, request.query_params.get("site"))
    day = _day(
        request.query_params.get("date"), _local_today(c, site.time_zone) + dt.timedelta(days=1)
    )
    reservations = pages(
        lambda token: calls.inventory.ListReservations(
            inv.ListReservationsRequest(
                site_id=site.id,
                needed_from=from_date(day),
                needed_to=from_date(day),
                page_size=MAX_PAGE,
                page_token=token,
            )
        ),
        "reservations",
    )
    products = _products(calls)
    lines: list[PickLine] = []
    for r in reservations:
        state = inv.ReservationState.Name(r.state).removeprefix("RESERVATION_STATE_").lower()
        if state in ("released", "cancelled"):
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
            lines.append(
                PickLine(
                    r.appointment_id,
                    r.patient_id,
                    line.product_id or r.product_id,
                    r.grams,
                    line.lot_number,
                    line.vials,
                    to_date(line.expiry_date) if line.HasField("expiry_date") else None,
                    state,
                    r.at_risk_reason,
                    products.get(line.product_id or r.product_id, line.product_id or r.product_id),
                )
            )
    lines.sort(key=lambda x: (x.product, x.lot_number, x.appointment_id))
    return site, sites, day, lines


def pick_list(request: Request) -> Response:
    c = _app(request)
    site, sites, day, lines = pick_lines(c, request)
    totals: dict[tuple[str, str], int] = {}
    for line in lines:
        key = (line.product_name, line.lot_number)
        totals[key] = totals.get(key, 0) + line.vials
    return c.render(
        request,
        "pick_list.html",
        site=site,
        sites=sites,
        day=day,
        lines=lines,
        totals=sorted(totals.items()),
    )


def pick_list_csv(request: Request) -> Response:
    c = _app(request)
    site, _sites_, day, lines = pick_lines(c, request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "needed_on",
            "site",
            "appointment",
            "patient_id",
            "product_id",
            "product",
            "dose_grams",
            "lot",
            "vials",
            "expiry",
            "state",
            "note",
        ]
    )
    for line in lines:
        writer.writerow(
            [
                day.isoformat(),
                site.id,
                line.appointment_id,
                line.patient_id,
                line.product,
                line.product_name,
                line.dose_grams,
                line.lot_number,
                line.vials,
                line.expiry.isoformat() if line.expiry else "",
                line.state,
                line.note,
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="pick-list-{site.id}-{day}.csv"'},
    )


def routes() -> list[Route]:
    return [
        Route("/board", board),
        Route("/due", due),
        Route("/due/{plan_id}/slots", slots),
        Route("/book/confirm", book_confirm, methods=["POST"]),
        Route("/book", book, methods=["POST"]),
        Route("/appointments/{appointment_id}/cancel/confirm", cancel_confirm, methods=["POST"]),
        Route("/appointments/{appointment_id}/cancel", cancel, methods=["POST"]),
        Route("/pharmacy", pharmacy),
        Route("/pharmacy/pick-list", pick_list),
        Route("/pharmacy/pick-list.csv", pick_list_csv),
    ]
