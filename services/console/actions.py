"""The console's actions, the pages that change things: at the chair (check in, start, complete
with the lots given, no-show), moving a booking to another slot, a purchase order from a
reorder suggestion and a lot's recall.

Every action is a POST with the session's CSRF token, made as the signed-in user through the
services' own RPCs, and carries a request id made for its form, so a double submit has one
effect (the services' request_id idempotency). An action also needs its RPC's permission here
(a 403 page otherwise); the services stay the final word. Their refusals a user can act on
(FAILED_PRECONDITION's rule, INVALID_ARGUMENT's field, ABORTED: changed meanwhile) come back
as a readable page with the way back, never a 500; the others (not found, not allowed) are the
console's error pages (app.rpc_error)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import grpc
from google.rpc import error_details_pb2
from google.type import timeofday_pb2
from grpc_status import rpc_status
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.convert import from_date, to_date, to_money
from services.console import reads, views
from services.console.context import Console, check_csrf, console
from services.console.refusals import GRPC_STATUS

if TYPE_CHECKING:
    from services.console.auth import User
    from services.console.backend import UserCalls

ATTEND = "scheduler.attendance.record"
ADMINISTER = "scheduler.infusions.administer"
MOVE = "scheduler.appointments.book"
ORDER = "inventory.purchase_orders.write"
RECALL = "inventory.lots.recall"
LOT_ROWS = 3  # lot fields on the completion form (a dose rarely needs more lots)

# the refusals a user can act on, titled as the error pages title them
REFUSALS = {
    code: GRPC_STATUS[code]
    for code in (
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.ALREADY_EXISTS,
    )
}
CHANGED = (
    "This was changed by someone else since you opened the page: open it again to see it as "
    "it is now, then choose again."
)


def _acting(request: Request, permission: str) -> tuple[Console, User, UserCalls]:
    """The console, the signed-in user holding ``permission`` (Console.user: a 403 page
    otherwise) and their calls."""
    c = console(request)
    user = c.user(request, permission=permission)
    return c, user, c.backend.as_user(user.token)


def _request_id(values: dict[str, str]) -> str:
    """The form's request id (a fresh one when the form has none), prefixed for the services'
    idempotency records."""
    return f"console-{values.get('request_id') or uuid.uuid4()}"[:128]


def refusal_lines(error: grpc.RpcError) -> list[str]:
    """What the service said, readable: each broken rule (PreconditionFailure: its
    description and type) and each refused field (BadRequest), else the status message."""
    lines: list[str] = []
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for packed in status.details if status is not None else []:
        if packed.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            packed.Unpack(failure)
            lines += [f"{v.description} (rule {v.type})" for v in failure.violations]
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            lines += [f"{v.field}: {v.description}" for v in bad.field_violations]
    if not lines and isinstance(error, grpc.Call):
        lines.append(error.details() or "")
    return lines


async def _attempt(
    c: Console, request: Request, back: str, method: Callable[[Any], Any], message: Any
) -> tuple[Any, Response | None]:
    """``method(message)``, or the page saying why the service refused it (with a link
    ``back``) when the refusal is one the user can act on; other errors go on to the error
    pages."""
    try:
        return await run_in_threadpool(method, message), None
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        if code not in REFUSALS:
            raise
        status, title = REFUSALS[code]
        lines = refusal_lines(error)
        if code == grpc.StatusCode.ABORTED:
            lines.insert(0, CHANGED)
        page = c.render(
            request, "action_refused.html", status_code=status, title=title, lines=lines, back=back
        )
        return None, page


def _board(site_id: str, day: Any) -> str:
    return "/board?" + urlencode({"site": site_id, "date": str(day)})


def _board_of(a: pb.Appointment) -> str:
    return _board(a.site_id, to_date(a.local_date).isoformat())


def _back_to_board(values: dict[str, str]) -> str:
    return _board(values.get("site", ""), values.get("date", ""))


# -- at the chair: check in, start, no-show, complete ------------------------------------------


def _chair_action(
    permission: str, make: Callable[[str, str, Console], Any], rpc: str
) -> Callable[[Request], Any]:
    """A one-button action on the board's block: ``make(appointment id, request id, console)``
    is the request of RPC ``rpc``; then the board of the appointment's day."""

    async def action(request: Request) -> Response:
        c, _user, calls = _acting(request, permission)
        values = await check_csrf(request)
        message = make(request.path_params["appointment_id"], _request_id(values), c)
        done, refused = await _attempt(
            c, request, _back_to_board(values), getattr(calls.scheduler, rpc), message
        )
        return refused or RedirectResponse(_board_of(done.appointment), status_code=303)

    return action


def _started(appointment_id: str, request_id: str, c: Console) -> pb.StartInfusionRequest:
    request = pb.StartInfusionRequest(id=appointment_id, request_id=request_id)
    request.actual_start_time.FromDatetime(c.clock.now())
    return request


check_in = _chair_action(ATTEND, lambda a, r, c: pb.CheckInRequest(id=a, request_id=r), "CheckIn")
start = _chair_action(ADMINISTER, _started, "StartInfusion")
no_show = _chair_action(
    ATTEND, lambda a, r, c: pb.MarkNoShowRequest(id=a, request_id=r), "MarkNoShow"
)


async def _appointment(calls: UserCalls, appointment_id: str) -> pb.Appointment:
    found: pb.Appointment = (
        await run_in_threadpool(
            calls.scheduler.GetAppointment, pb.GetAppointmentRequest(id=appointment_id)
        )
    ).appointment
    return found


async def _described(calls: UserCalls, a: pb.Appointment) -> dict[str, Any]:
    """The appointment as the confirmation pages show it: patient, day, start, product."""
    names = await run_in_threadpool(reads.patient_names, calls, [a.patient_id])
    products = await run_in_threadpool(reads.product_names, calls)
    return {
        "appointment": a,
        "patient": names.get(a.patient_id, a.patient_id),
        "day": to_date(a.local_date),
        "start": views.clock(reads.minutes(a.local_start)),
        "product": products.get(a.product_id, a.product_id),
        "back": _board_of(a),
    }


async def complete_form(request: Request) -> Response:
    """The completion form: the grams given (the booked dose by default) and the lots, each
    scanned (GS1) or typed, with its vials."""
    c, _user, calls = _acting(request, ADMINISTER)
    await check_csrf(request)
    a = await _appointment(calls, request.path_params["appointment_id"])
    return c.render(
        request,
        "complete.html",
        **await _described(calls, a),
        grams=a.dose_grams,
        rows=range(1, LOT_ROWS + 1),
        request_id=str(uuid.uuid4()),
    )


def scanned_lots(values: dict[str, str], product_id: str) -> list[pb.ScannedLot]:
    """The form's lots: a GS1 scan (it starts with an AI in brackets or ``01``, or carries
    the FNC1 separator) goes as the element string for the scheduler to read, anything else
    as a lot number; vials default to 1."""
    lots = []
    for row in range(1, LOT_ROWS + 1):
        typed = values.get(f"lot_{row}", "").strip()
        if not typed:
            continue
        try:
            vials = int(values.get(f"vials_{row}", "") or 1)
        except ValueError:
            raise HTTPException(400, f"Vials of lot {row}: a whole number.") from None
        scan = typed.startswith("(") or "\x1d" in typed or (typed[:2] == "01" and len(typed) > 16)
        lots.append(
            pb.ScannedLot(
                gs1_element_string=typed if scan else "",
                lot_number="" if scan else typed,
                vials=vials,
                product_id=product_id,
            )
        )
    return lots


async def complete(request: Request) -> Response:
    c, _user, calls = _acting(request, ADMINISTER)
    values = await check_csrf(request)
    appointment_id = request.path_params["appointment_id"]
    message = pb.CompleteInfusionRequest(
        id=appointment_id,
        grams_given=values.get("grams", "").strip(),
        scanned_lots=scanned_lots(values, values.get("product_id", "")),
        request_id=_request_id(values),
    )
    done, refused = await _attempt(
        c, request, _back_to_board(values), calls.scheduler.CompleteInfusion, message
    )
    return refused or RedirectResponse(_board_of(done.appointment), status_code=303)


# -- moving a booking --------------------------------------------------------------------------


async def move_slots(request: Request) -> Response:
    """The free chair times around the appointment's day (from the day before to a week
    after, not before today), each with a button to move it there. (FindSlots searches for a
    plan's next unbooked infusion, so the free times come from the chair boards; the scheduler
    checks the rest when the booking moves.)"""
    c, _user, calls = _acting(request, MOVE)
    a = await _appointment(calls, request.path_params["appointment_id"])
    day = to_date(a.local_date)
    first = max(day - dt.timedelta(days=1), c.clock.now().date())
    days = [first + dt.timedelta(days=n) for n in range((day - first).days + 8)]
    length = reads.minutes(a.local_end) - reads.minutes(a.local_start)
    offered = await run_in_threadpool(reads.free_chair_times, calls, a.site_id, days, length, a.id)
    return c.render(request, "move.html", **await _described(calls, a), slots=offered)


def _slot(values: dict[str, str]) -> tuple[dt.date, timeofday_pb2.TimeOfDay]:
    try:
        day = dt.date.fromisoformat(values.get("date", ""))
        hours, minutes = (int(x) for x in values.get("start", "").split(":"))
    except ValueError:
        raise HTTPException(400, "The slot's date or time is not readable.") from None
    return day, timeofday_pb2.TimeOfDay(hours=hours, minutes=minutes)


async def move_confirm(request: Request) -> Response:
    c, _user, calls = _acting(request, MOVE)
    values = await check_csrf(request)
    _slot(values)
    a = await _appointment(calls, request.path_params["appointment_id"])
    slot = {k: values.get(k, "") for k in ("chair_id", "chair", "date", "start", "etag")}
    return c.render(
        request,
        "move_confirm.html",
        **await _described(calls, a),
        slot=slot,
        request_id=str(uuid.uuid4()),
    )


async def move(request: Request) -> Response:
    """RescheduleAppointment with the etag of the page the move was chosen on: a booking
    changed meanwhile is refused (ABORTED) and said so."""
    c, _user, calls = _acting(request, MOVE)
    values = await check_csrf(request)
    day, start_at = _slot(values)
    appointment_id = request.path_params["appointment_id"]
    message = pb.RescheduleAppointmentRequest(
        id=appointment_id,
        chair_id=values.get("chair_id", ""),
        local_date=from_date(day),
        local_start=start_at,
        etag=values.get("etag", "")[:64],
        request_id=_request_id(values),
    )
    back = f"/appointments/{appointment_id}/move"
    done, refused = await _attempt(c, request, back, calls.scheduler.RescheduleAppointment, message)
    if refused:
        return refused
    return RedirectResponse(_board_of(done.appointment) + "&moved=1", status_code=303)


# -- pharmacy: a purchase order from a suggestion, a lot's recall -----------------------------

ORDER_FIELDS = ("site", "product_id", "product", "presentation_grams", "vials")


def _order_form(values: dict[str, str], user: User, calls: UserCalls) -> dict[str, str]:
    """The suggestion's fields, for one of the user's own stock sites (404 otherwise)."""
    order = {k: values.get(k, "").strip() for k in ORDER_FIELDS}
    missing = [k for k in ORDER_FIELDS if not order[k]]
    if missing:
        raise HTTPException(400, f"Missing: {', '.join(missing)}.")
    if order["site"] not in {s.id for s in reads.stock_sites(calls, user.sees_site)}:
        raise HTTPException(404, "No such site.")
    return order


async def order_confirm(request: Request) -> Response:
    """The suggestion as an order to check (vials, supplier, cost per vial) before placing."""
    c, user, calls = _acting(request, ORDER)
    values = await check_csrf(request)
    return c.render(
        request,
        "order_confirm.html",
        order=await run_in_threadpool(_order_form, values, user, calls),
        currencies=("GBP", "EUR", "USD", "CHF"),
        request_id=str(uuid.uuid4()),
    )


async def order(request: Request) -> Response:
    c, user, calls = _acting(request, ORDER)
    values = await check_csrf(request)
    wanted = await run_in_threadpool(_order_form, values, user, calls)
    try:
        vials = int(wanted["vials"])
        cost = Decimal(values.get("unit_cost", "").strip() or "0")
    except (ValueError, InvalidOperation):
        raise HTTPException(400, "Vials: a whole number; cost per vial: an amount.") from None
    line = inv.PurchaseOrderLine(
        product_id=wanted["product_id"],
        presentation_grams=wanted["presentation_grams"],
        vials_ordered=vials,
    )
    if cost:
        line.unit_cost.CopyFrom(to_money(cost, values.get("currency", "GBP")[:3]))
    message = inv.CreatePurchaseOrderRequest(
        purchase_order=inv.PurchaseOrder(
            site_id=wanted["site"],
            supplier=values.get("supplier", "")[:200],
            reference=values.get("reference", "")[:80],
            lines=[line],
        ),
        request_id=_request_id(values),
    )
    back = "/reorder?" + urlencode({"site": wanted["site"]})
    done, refused = await _attempt(c, request, back, calls.inventory.CreatePurchaseOrder, message)
    if refused:
        return refused
    return RedirectResponse(
        back + "&" + urlencode({"ordered": done.purchase_order.id}), status_code=303
    )


def _lot(values: dict[str, str]) -> tuple[str, str]:
    product_id, lot_number = values.get("product", ""), values.get("lot", "").strip()[:40]
    if not product_id or not lot_number:
        raise HTTPException(400, "Missing: the product and the lot number.")
    return product_id, lot_number


async def _trace(calls: UserCalls, user: User, product_id: str, lot_number: str) -> Any:
    return await run_in_threadpool(
        reads.recall_trace, calls, product_id, lot_number, user.sees_site
    )


async def recall_confirm(request: Request) -> Response:
    """What a recall would take out of use (the trace as the recall page shows it) and the
    reason the recall needs."""
    c, user, calls = _acting(request, RECALL)
    product_id, lot_number = _lot(await check_csrf(request))
    return c.render(
        request,
        "recall_confirm.html",
        product_id=product_id,
        lot_number=lot_number,
        trace=await _trace(calls, user, product_id, lot_number),
        request_id=str(uuid.uuid4()),
    )


async def recall_lot(request: Request) -> Response:
    """RecallLot, then the trace of the patients and sites it reached."""
    c, user, calls = _acting(request, RECALL)
    values = await check_csrf(request)
    product_id, lot_number = _lot(values)
    reason = values.get("reason", "").strip()[:1000]
    if not reason:
        raise HTTPException(400, "A recall needs its reason.")
    back = "/recall?" + urlencode({"product": product_id, "lot": lot_number})
    message = inv.RecallLotRequest(
        product_id=product_id,
        lot_number=lot_number,
        reason=reason,
        actor=user.name[:200] if user.name else user.subject[:200],
        request_id=_request_id(values),
    )
    done, refused = await _attempt(c, request, back, calls.inventory.RecallLot, message)
    if refused:
        return refused
    return c.render(
        request,
        "recalled.html",
        trace=await _trace(calls, user, product_id, lot_number),
        reallocated=len(done.reallocated),
        at_risk=len(done.at_risk),
        back=back,
    )


def routes() -> list[Route]:
    return [
        Route("/appointments/{appointment_id}/check-in", check_in, methods=["POST"]),
        Route("/appointments/{appointment_id}/start", start, methods=["POST"]),
        Route("/appointments/{appointment_id}/no-show", no_show, methods=["POST"]),
        Route("/appointments/{appointment_id}/complete/form", complete_form, methods=["POST"]),
        Route("/appointments/{appointment_id}/complete", complete, methods=["POST"]),
        Route("/appointments/{appointment_id}/move", move_slots),
        Route("/appointments/{appointment_id}/move/confirm", move_confirm, methods=["POST"]),
        Route("/appointments/{appointment_id}/move", move, methods=["POST"]),
        Route("/reorder/order/confirm", order_confirm, methods=["POST"]),
        Route("/reorder/order", order, methods=["POST"]),
        Route("/recall/confirm", recall_confirm, methods=["POST"]),
        Route("/recall/lot", recall_lot, methods=["POST"]),
    ]
