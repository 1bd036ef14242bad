"""The console's pages: the chair board, the due list with slot search, booking and
cancelling, the pharmacy's expiring lots, pick list, stock levels, receiving by scan,
forecast chart, reorder and recall trace, and the patient pages. Every handler first asks for a
user allowed to open its page (context.Console.user), then reads through the services with that
user's token; the services' own checks (permissions, organisation and site scope) stay the
final word, and their refusals become the error page (app.rpc_error)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date, to_date
from services.console import reads, receiving, views
from services.console.auth import PAGE
from services.console.backend import UserCalls
from services.console.backend import pages as backend_pages
from services.console.choosing import asked_day, chosen_site, local_today
from services.console.context import Console, check_csrf, console

if TYPE_CHECKING:
    from services.console.auth import User


def _calls(c: Console, user: User) -> UserCalls:
    return c.backend.as_user(user.token)


def _whole_number(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as a whole number, kept within [low, high]."""
    try:
        value = int(request.query_params.get(name, str(default)))
    except ValueError:
        raise HTTPException(400, f"{name}: a whole number.") from None
    return min(max(value, low), high)


# -- chair board -------------------------------------------------------------------------------


def board_view(c: Console, request: Request) -> dict[str, Any]:
    user = c.user(request, "board")
    calls = _calls(c, user)
    sites = reads.sites(calls, user.organisation, user.sees_site)
    site = chosen_site(sites, request.query_params.get("site"))
    day = asked_day(request.query_params.get("date"), local_today(c.clock, site.time_zone))
    board = reads.chair_board(calls, site, day)
    return {
        "site": site,
        "sites": sites,
        "day": day,
        "previous_day": day - dt.timedelta(days=1),
        "next_day": day + dt.timedelta(days=1),
        "rows": board.rows,
        "load": board.load,
        "hour_marks": board.hour_marks,
        "axis": (views.clock(board.axis.start), views.clock(board.axis.end)),
        "wall": request.query_params.get("wall") == "1",
        "can_book": user.may_open(PAGE["due"], c.roles),
        "held": user.permissions(c.roles),  # the chair actions each need their permission
        "refresh": c.settings.wall_refresh_seconds,
    }


def board(request: Request) -> Response:
    c = console(request)
    values = board_view(c, request)
    template = "board_rows.html" if request.headers.get("HX-Request") else "board.html"
    return c.render(request, template, **values)


# -- due list, slots, booking ------------------------------------------------------------------


def due(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "due")
    calls = _calls(c, user)
    sites = reads.sites(calls, user.organisation, user.sees_site)
    site = chosen_site(sites, request.query_params.get("site"))
    horizon = _whole_number(request, "days", 28, 1, 366)
    rows = reads.due_list(calls, site.id, horizon)
    return c.render(
        request,
        "due.html",
        site=site,
        sites=sites,
        rows=rows,
        days=horizon,
        can_see_patients=user.may_open(PAGE["patients"], c.roles),
    )


def slots(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "due")
    calls = _calls(c, user)
    plan_id = request.path_params["plan_id"]
    plan = calls.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan_id)).therapy_plan
    answer = calls.scheduler.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan_id, max_results=20))
    names = reads.patient_names(calls, [plan.patient_id])
    offered, limits = reads.offered_slots(calls, plan.site_id, answer)
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
    c = console(request)
    c.user(request, "due")
    slot = _slot_form(await check_csrf(request))
    slot["patient"] = (await request.form()).get("patient", "")  # type: ignore[assignment]
    return c.render(request, "book_confirm.html", slot=slot, request_id=str(uuid.uuid4()))


async def book(request: Request) -> Response:
    """Step two: the booking itself (the request id makes a double click one booking)."""
    from starlette.concurrency import run_in_threadpool

    c = console(request)
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

    c = console(request)
    user = c.user(request, "due")
    await check_csrf(request)
    calls = _calls(c, user)
    appointment = (
        await run_in_threadpool(
            calls.scheduler.GetAppointment,
            pb.GetAppointmentRequest(id=request.path_params["appointment_id"]),
        )
    ).appointment
    names = await run_in_threadpool(reads.patient_names, calls, [appointment.patient_id])
    return c.render(
        request,
        "cancel_confirm.html",
        appointment=appointment,
        patient=names.get(appointment.patient_id, ""),
        day=to_date(appointment.local_date),
        start=views.clock(reads.minutes(appointment.local_start)),
        request_id=str(uuid.uuid4()),
    )


async def cancel(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    c = console(request)
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


def _at_stock_site(c: Console, request: Request, page: str) -> tuple[UserCalls, list[Any], Any]:
    """The user's calls, their stock sites and the one the query names (default: the first),
    for a pharmacy page the user may open."""
    user = c.user(request, page)
    calls = _calls(c, user)
    sites = reads.stock_sites(calls, user.sees_site)
    return calls, sites, chosen_site(sites, request.query_params.get("site"))


def pharmacy(request: Request) -> Response:
    c = console(request)
    calls, sites, site = _at_stock_site(c, request, "pharmacy")
    within = _whole_number(request, "days", 60, 0, 3650)
    today = local_today(c.clock, site.time_zone)
    rows = reads.expiring_lots(calls, site.id, today, within)
    return c.render(
        request, "pharmacy.html", site=site, sites=sites, lots=rows, days=within, today=today
    )


def pick_lines(
    c: Console, request: Request
) -> tuple[Any, list[Any], dt.date, list[reads.PickLine]]:
    calls, sites, site = _at_stock_site(c, request, "pharmacy")
    day = asked_day(
        request.query_params.get("date"),
        local_today(c.clock, site.time_zone) + dt.timedelta(days=1),
    )
    return site, sites, day, reads.pick_list(calls, site.id, day)


def pick_list(request: Request) -> Response:
    c = console(request)
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
    c = console(request)
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
        *pharmacy_routes(),
    ]


# -- pharmacy: stock, receiving, forecast, reorder, recall -------------------------------------


def stock(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "stock")
    calls = _calls(c, user)
    sites = reads.stock_sites(calls, user.sees_site)
    wanted = request.query_params.get("site")
    chosen = [chosen_site(sites, wanted)] if wanted else sites
    rows = reads.stock_levels(calls, chosen)
    return c.render(request, "stock.html", rows=rows, sites=sites, site=wanted or "")


RECEIVE_FIELDS = ("site", "scan", "vials", "unit_cost", "currency", "supplier")
CURRENCIES = ("GBP", "EUR", "USD", "CHF")


def _receive_form(c: Console, request: Request, values: dict[str, str], **extra: Any) -> Response:
    user = c.user(request, "receive")
    sites = reads.stock_sites(_calls(c, user), user.sees_site)
    if not sites:
        raise HTTPException(404, "No site of your organisation is open to you.")
    form = {k: values.get(k, "") for k in RECEIVE_FIELDS}
    form["currency"] = form["currency"] or CURRENCIES[0]
    form["site"] = form["site"] or sites[0].id
    return c.render(
        request,
        "receive.html",
        sites=sites,
        form=form,
        currencies=CURRENCIES,
        status_code=extra.pop("status_code", 200),
        **extra,
    )


def receive_page(request: Request) -> Response:
    c = console(request)
    return _receive_form(c, request, dict(request.query_params))


async def receive_check(request: Request) -> Response:
    """Step one: what the scan says (GTIN, expiry, lot, serial) and which product it is, with
    the receipt's other fields to check before booking the vials in."""
    from starlette.concurrency import run_in_threadpool

    from services.common.gs1 import ScanError

    c = console(request)
    user = c.user(request, "receive")
    values = await check_csrf(request)
    try:
        preview = await run_in_threadpool(
            reads.preview_scan, _calls(c, user), values.get("scan", "")
        )
    except ScanError as error:
        return _receive_form(c, request, values, scan_error=str(error), status_code=400)
    orders: list[Any] = []
    if preview.product_id and "inventory.purchase_orders.receive" in user.permissions(c.roles):
        orders = await run_in_threadpool(
            receiving.open_lines,
            _calls(c, user),
            values.get("site", ""),
            preview.product_id,
            preview.presentation_grams,
        )
    return _receive_form(
        c, request, values, preview=preview, orders=orders, request_id=str(uuid.uuid4())
    )


async def receive(request: Request) -> Response:
    """Step two: ReceiveStock with the scan as typed (the inventory reads it again and checks
    it); the request id makes a second click one receipt."""
    from decimal import Decimal, InvalidOperation

    from starlette.concurrency import run_in_threadpool

    c = console(request)
    user = c.user(request, "receive")
    values = await check_csrf(request)
    request_id = f"console-{values.get('request_id') or uuid.uuid4()}"[:128]
    keep = {k: values.get(k, "") for k in ("site", "currency", "unit_cost", "supplier")}
    order, _, line = values.get("order", "").partition("/")
    if order and line:  # against a purchase order: its line's cost, the lot from the scan
        try:
            vials = int(values.get("vials", ""))
        except ValueError:
            raise HTTPException(400, "Vials: a whole number.") from None
        received = await run_in_threadpool(
            receiving.receive_against,
            _calls(c, user),
            order,
            line,
            values.get("scan", ""),
            vials,
            request_id,
        )
        return _receive_form(c, request, keep, received=received, order=order)
    try:
        vials = int(values.get("vials", ""))
        unit_cost = Decimal(values.get("unit_cost", "").strip())
    except (ValueError, InvalidOperation):
        raise HTTPException(400, "Vials: a whole number; cost per vial: an amount.") from None
    currency = values.get("currency", "")
    if currency not in CURRENCIES:
        raise HTTPException(400, f"Currency: one of {', '.join(CURRENCIES)}.")
    received = await run_in_threadpool(
        reads.receive,
        _calls(c, user),
        values.get("site", ""),
        values.get("scan", ""),
        vials,
        unit_cost,
        currency,
        values.get("supplier", "")[:200],
        request_id,
    )
    # a fresh form for the next carton, on the same site, cost and supplier
    return _receive_form(c, request, keep, received=received)


def _product_choice(
    calls: UserCalls, site: Any, wanted: str | None
) -> tuple[list[tuple[str, str]], str]:
    """The products the site stocks (by name) and the chosen one (default: the one with the
    most vials reserved, the busiest)."""
    levels = reads.stock_levels(calls, [site])
    choices = [(r.product_id, r.product) for r in levels]
    busiest = sorted(levels, key=lambda r: -r.reserved_vials)
    if wanted and wanted not in {p for p, _ in choices}:
        choices.append((wanted, reads.product_names(calls).get(wanted, wanted)))
    if not choices:
        raise HTTPException(404, "The site stocks no product yet.")
    return choices, wanted or (busiest[0].product_id if busiest else choices[0][0])


def forecast(request: Request) -> Response:
    c = console(request)
    calls, sites, site = _at_stock_site(c, request, "forecast")
    horizon = _whole_number(request, "days", 28, 1, 366)
    products, product_id = _product_choice(calls, site, request.query_params.get("product"))
    found = reads.forecast(calls, site.id, product_id, horizon)
    return c.render(
        request,
        "forecast.html",
        site=site,
        sites=sites,
        products=products,
        product_id=product_id,
        days=horizon,
        forecast=found,
        chart=views.forecast_chart(found.days, found.stockout),
    )


def reorder(request: Request) -> Response:
    c = console(request)
    calls, sites, site = _at_stock_site(c, request, "reorder")
    suggestions, orders = reads.reorder(calls, site.id)
    return c.render(
        request,
        "reorder.html",
        site=site,
        sites=sites,
        suggestions=suggestions,
        orders=orders,
        held=c.user(request).permissions(c.roles),
        ordered=request.query_params.get("ordered", ""),
    )


def recall(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "recall")
    calls = _calls(c, user)
    products = sorted(reads.product_names(calls).items(), key=lambda p: p[1])
    product_id = request.query_params.get("product", "")
    lot_number = request.query_params.get("lot", "").strip()[:40]
    trace = None
    if product_id and lot_number:
        trace = reads.recall_trace(calls, product_id, lot_number, user.sees_site)
    return c.render(
        request,
        "recall.html",
        products=products,
        product_id=product_id,
        lot_number=lot_number,
        trace=trace,
        held=user.permissions(c.roles),
    )


# -- patients ----------------------------------------------------------------------------------


def patients(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "patients")
    calls = _calls(c, user)
    found = sorted(
        backend_pages(
            lambda token: calls.scheduler.ListPatients(
                pb.ListPatientsRequest(
                    organisation_id=user.organisation, page_size=reads.MAX_PAGE, page_token=token
                )
            ),
            "patients",
        ),
        key=lambda p: (p.family_name.lower(), p.given_name.lower()),
    )
    return c.render(request, "patients.html", patients=found)


def patient(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "patients")
    held = user.permissions(c.roles)
    record = reads.patient_record(
        _calls(c, user),
        request.path_params["patient_id"],
        held.__contains__,
        c.clock.now().date(),
    )
    chart = views.line_chart(record.grip, "kg") if record.grip else None
    return c.render(
        request,
        "patient.html",
        record=record,
        p=record.patient,
        chart=chart,
        may_propose="scheduler.regimens.propose" in held,
        may_review="scheduler.reviews.write" in held,
        request_id=str(uuid.uuid4()),
        accepted=request.query_params.get("accepted", ""),
        reviewed=request.query_params.get("reviewed", ""),
        held=held,
    )


def pharmacy_routes() -> list[Route]:
    return [
        Route("/stock", stock),
        Route("/receive", receive_page),
        Route("/receive/check", receive_check, methods=["POST"]),
        Route("/receive", receive, methods=["POST"]),
        Route("/forecast", forecast),
        Route("/reorder", reorder),
        Route("/recall", recall),
        Route("/patients", patients),
        Route("/patients/{patient_id}", patient),
    ]
