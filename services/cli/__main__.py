"""``infusion ...`` (installed by the project; ``python -m services.cli`` too): the chair
board, the due list, slots, booking, moving and cancelling, the optimiser's plan (with progress
while it solves), enrolling patients from a CSV file (with a progress bar), expiring lots, the
pick list, stock levels, receiving by GS1 scan, reorder suggestions and the recall trace, as
Rich tables or, with ``--json``, as JSON for scripts. It calls the services like any client,
with the token in ``INFUSION_TOKEN`` (``make token ROLE=...`` prints one), at
``SCHEDULER_ADDRESS``, ``INVENTORY_ADDRESS`` and ``NOTIFY_ADDRESS`` (TLS with
``INFUSION_TLS_CA_FILE`` and, for mutual TLS, ``INFUSION_TLS_CERT_FILE`` and
``INFUSION_TLS_KEY_FILE``). What it reads is what the console's pages read
(services/console/reads.py). A refused call prints the service's reason and exits 1."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import grpc
import jwt
import typer
from google.type import timeofday_pb2
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.channels import open_channel
from services.common.convert import from_date, to_date
from services.common.settings import DEFAULT_PORTS
from services.common.tls import ClientTls
from services.console import importing, planning, reads, views
from services.console.backend import Backend, UserCalls

app = typer.Typer(
    help="The infusion platform from a terminal: board, due list, booking, pharmacy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")
JSON = False
out = Console(soft_wrap=True)
err = Console(stderr=True)


@dataclasses.dataclass(frozen=True)
class Session:
    calls: UserCalls
    organisation: str
    sites: tuple[str, ...] | None

    def sees(self, site_id: str) -> bool:
        return self.sites is None or site_id in self.sites


def _session(timeout: float = 10.0) -> Session:
    """The user's calls, each with ``timeout`` seconds to answer."""
    token = os.environ.get("INFUSION_TOKEN", "")
    if not token:
        err.print("error: no token: set INFUSION_TOKEN (make token ROLE=<role> prints one)")
        raise typer.Exit(2)
    try:  # who the token says the user is, to choose a default site; the services verify it
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        err.print("error: INFUSION_TOKEN is not a token")
        raise typer.Exit(2) from None
    tls = None
    if os.environ.get("INFUSION_TLS_CA_FILE"):
        tls = ClientTls(
            os.environ["INFUSION_TLS_CA_FILE"],
            os.environ.get("INFUSION_TLS_CERT_FILE", ""),
            os.environ.get("INFUSION_TLS_KEY_FILE", ""),
        )
    channels = {}
    for name, port in DEFAULT_PORTS.items():
        address = os.environ.get(f"{name.upper()}_ADDRESS") or f"127.0.0.1:{port}"
        server = dataclasses.replace(tls, server_name=name) if tls else None
        channels[name] = open_channel(address, server)
    sites = claims.get("sites")
    return Session(
        Backend(channels, timeout).as_user(token),
        str(claims.get("org", "")),
        None if sites in (None, "*") else tuple(str(s) for s in sites),
    )


@contextmanager
def _refusals() -> Iterator[None]:
    """A refused or failed call: the service's words on stderr, exit status 1."""
    try:
        yield
    except grpc.RpcError as error:
        if isinstance(error, grpc.Call):
            err.print(f"error: {error.code().name}: {error.details()}")
        else:
            err.print(f"error: {error}")
        raise typer.Exit(1) from None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _emit(data: Any, table: Callable[[], Table]) -> None:
    if JSON:
        print(json.dumps(_plain(data), indent=2))
    else:
        out.print(table())


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _site(session: Session, wanted: str | None, *, stock: bool = False) -> Any:
    found = (
        reads.stock_sites(session.calls, session.sees)
        if stock
        else reads.sites(session.calls, session.organisation, session.sees)
    )
    for site in found:
        if wanted in (None, site.id):
            return site
    err.print(f"error: no site {wanted!r} of yours" if wanted else "error: you have no site")
    raise typer.Exit(1)


def _today(time_zone: str) -> dt.date:
    try:
        return dt.datetime.now(ZoneInfo(time_zone)).date()
    except (KeyError, ValueError):
        return dt.datetime.now(dt.UTC).date()


Site = Annotated[str | None, typer.Option(help="site id (default: your first)")]
Day = Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="YYYY-MM-DD")]


@app.callback()
def options(
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of tables")] = False,
) -> None:
    global JSON
    JSON = json_output


@app.command()
def board(site: Site = None, date: Day = None) -> None:
    """The chair board for a day: each chair's appointments, then the nurse load per hour."""
    session = _session()
    with _refusals():
        chosen = _site(session, site)
        day = date.date() if date else _today(chosen.time_zone)
        data = reads.chair_board(session.calls, chosen, day)
    rows = [
        {
            "chair": r.chair,
            **{
                k: getattr(b, k)
                for k in ("start", "end", "patient", "product", "dose", "status", "appointment_id")
            },
        }
        for r in data.rows
        for b in r.blocks
    ]
    load = [{"hour": h.label, "patients": h.patients, "capacity": h.capacity} for h in data.load]

    def table() -> Table:
        t = _table(
            f"{chosen.display_name or chosen.id}, {day}",
            "chair",
            "time",
            "patient",
            "product",
            "dose",
            "status",
            "appointment",
        )
        for r in rows:
            t.add_row(
                r["chair"],
                f"{r['start']}-{r['end']}",
                r["patient"],
                r["product"],
                r["dose"],
                r["status"],
                r["appointment_id"],
            )
        return t

    _emit({"site": chosen.id, "date": day, "appointments": rows, "nurse_load": load}, table)


@app.command()
def due(site: Site = None, days: Annotated[int, typer.Option(min=1, max=366)] = 28) -> None:
    """Who is due or overdue in the next DAYS, by due date."""
    session = _session()
    with _refusals():
        chosen = _site(session, site)
        rows = reads.due_list(session.calls, chosen.id, days)

    def table() -> Table:
        t = _table(
            f"Due at {chosen.display_name or chosen.id} within {days} days",
            "patient",
            "product",
            "course",
            "due",
            "window",
            "state",
            "plan",
        )
        for r in rows:
            state = "booked" if r.booked else "overdue" if r.overdue else "to book"
            t.add_row(
                r.patient,
                r.product,
                r.course,
                str(r.due),
                f"{r.window[0]} to {r.window[1]}",
                state,
                r.plan,
            )
        return t

    _emit(rows, table)


@app.command()
def slots(plan: str, limit: Annotated[int, typer.Option(min=1, max=100)] = 10) -> None:
    """Free slots for a therapy plan's next infusion, and why days offer nothing."""
    session = _session()
    with _refusals():
        answer = session.calls.scheduler.FindSlots(
            pb.FindSlotsRequest(therapy_plan_id=plan, max_results=limit)
        )
    found = [
        {
            "chair_id": s.chair_id,
            "date": to_date(s.local_date),
            "start": views.clock(reads.minutes(s.local_start)),
            "end": views.clock(reads.minutes(s.local_end)),
            "nurse_load": s.nurse_load,
            "nurse_capacity": s.nurse_capacity,
            "days_from_due": s.days_from_due,
            "stock_note": s.stock_note if s.stock_short else "",
        }
        for s in answer.slots
    ]
    limits = [
        {"date": to_date(d.local_date), "limit": d.limit, "detail": d.detail}
        for d in answer.day_limits
    ]

    def table() -> Table:
        t = _table(f"Slots for plan {plan}", "date", "time", "chair", "nurses", "from due", "stock")
        for s in found:
            t.add_row(
                str(s["date"]),
                f"{s['start']}-{s['end']}",
                s["chair_id"],
                f"{s['nurse_load']}/{s['nurse_capacity']}",
                f"{s['days_from_due']:+d}",
                s["stock_note"] or "ok",
            )
        for d in limits:
            t.add_row(str(d["date"]), "-", "-", "-", "-", f"{d['limit']}: {d['detail']}")
        return t

    _emit({"slots": found, "day_limits": limits}, table)


def _time_of_day(start: str) -> timeofday_pb2.TimeOfDay:
    try:
        hours, minutes = (int(x) for x in start.split(":"))
    except ValueError:
        err.print("error: --start is HH:MM")
        raise typer.Exit(2) from None
    return timeofday_pb2.TimeOfDay(hours=hours, minutes=minutes)


Chair = Annotated[str, typer.Option(help="chair id (from `infusion slots`)")]
OnDay = Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="YYYY-MM-DD")]
Start = Annotated[str, typer.Option(help="HH:MM, the site's local time")]
RequestId = Annotated[str, typer.Option(help="repeat one to retry safely")]


def _ask(yes: bool, question: str) -> None:
    if not yes and not typer.confirm(question):
        raise typer.Exit(1)


@app.command()
def book(
    plan: str,
    chair: Chair,
    date: OnDay,
    start: Start,
    yes: Annotated[bool, typer.Option("--yes", help="book without asking")] = False,
    request_id: RequestId = "",
) -> None:
    """Book a plan's next infusion on a chair at a local day and start."""
    local_start = _time_of_day(start)
    _ask(yes, f"Book plan {plan} on chair {chair}, {date:%Y-%m-%d} {start}?")
    session = _session()
    with _refusals():
        made = session.calls.scheduler.BookAppointment(
            pb.BookAppointmentRequest(
                therapy_plan_id=plan,
                chair_id=chair,
                local_date=from_date(date.date()),
                local_start=local_start,
                request_id=request_id or f"cli-{uuid.uuid4()}",
            )
        ).appointment
    _appointment(made, "Booked")


@app.command()
def move(
    appointment: str,
    chair: Chair,
    date: OnDay,
    start: Start,
    yes: Annotated[bool, typer.Option("--yes", help="move without asking")] = False,
    request_id: RequestId = "",
) -> None:
    """Move a booking to another chair, day or start: the old slot is freed only if the new
    one is taken."""
    local_start = _time_of_day(start)
    _ask(yes, f"Move appointment {appointment} to chair {chair}, {date:%Y-%m-%d} {start}?")
    session = _session()
    with _refusals():
        moved = session.calls.scheduler.RescheduleAppointment(
            pb.RescheduleAppointmentRequest(
                id=appointment,
                chair_id=chair,
                local_date=from_date(date.date()),
                local_start=local_start,
                request_id=request_id or f"cli-{uuid.uuid4()}",
            )
        ).appointment
    _appointment(moved, "Moved")


@app.command()
def cancel(
    appointment: str,
    reason: Annotated[str, typer.Option(help="why (kept with the appointment)")],
    yes: Annotated[bool, typer.Option("--yes", help="cancel without asking")] = False,
    request_id: RequestId = "",
) -> None:
    """Cancel an appointment (its vials and reminders are released)."""
    _ask(yes, f"Cancel appointment {appointment}?")
    session = _session()
    with _refusals():
        done = session.calls.scheduler.CancelAppointment(
            pb.CancelAppointmentRequest(
                id=appointment, reason=reason, request_id=request_id or f"cli-{uuid.uuid4()}"
            )
        ).appointment
    _appointment(done, "Cancelled")


@app.command()
def plan(
    site: Site = None,
    date: Day = None,
    days: Annotated[
        int, typer.Option(min=1, max=planning.MAX_HORIZON_DAYS, help="days to plan")
    ] = 14,
    time_limit: Annotated[
        int,
        typer.Option(
            min=1, max=planning.MAX_TIME_LIMIT_SECONDS, help="seconds the optimiser may take"
        ),
    ] = 10,
    skip_without_stock: Annotated[
        bool, typer.Option(help="keep infusions off days without stock")
    ] = False,
    commit: Annotated[bool, typer.Option("--commit", help="book the proposals")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="book without asking")] = False,
    request_id: RequestId = "",
) -> None:
    """Plan the due infusions of DAYS days from DATE (default today) with the optimiser:
    proposals only, or booked with --commit. Shows progress while the solver works."""
    session = _session(timeout=time_limit + 60.0)  # the solver's limit, then the booking
    with _refusals():
        chosen = _site(session, site)
    first = date.date() if date else _today(chosen.time_zone)
    where = chosen.display_name or chosen.id
    if commit:
        _ask(yes, f"Book the optimiser's plan for {days} days from {first} at {where}?")
    with (
        _refusals(),
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=JSON,
        ) as progress,
    ):
        progress.add_task(
            f"Planning {days} days at {where} (the optimiser may take up to {time_limit} s)",
            total=None,
        )
        planned = planning.plan_schedule(
            session.calls,
            chosen.id,
            first,
            days,
            commit=commit,
            time_limit_seconds=time_limit,
            skip_without_stock=skip_without_stock,
            request_id=request_id or f"cli-{uuid.uuid4()}",
        )

    def table() -> Table:
        verb = "Booked" if planned.committed else "Proposed"
        t = _table(
            f"{verb}: {len(planned.proposals)} infusions at {where}, {days} days from {first} "
            f"({planned.solver_status}, objective {planned.objective} against the greedy "
            f"{planned.greedy_objective}, gap {planned.gap})",
            "date",
            "start",
            "end",
            "chair",
            "patient",
            "course day",
            "from due",
            "stock",
            "appointment",
        )
        for p in planned.proposals:
            t.add_row(
                str(p.date),
                p.start,
                p.end,
                p.chair,
                p.patient,
                str(p.course_day or ""),
                f"{p.days_from_due:+d}",
                p.stock_short or "ok",
                p.appointment_id,
            )
        for u in planned.unplaced:
            t.add_row("not placed", "", "", "", u.plan, str(u.course_day or ""), "", u.reason, "")
        return t

    _emit(planned, table)


@app.command("import-patients")
def import_patients(
    file: Annotated[
        typer.FileText, typer.Argument(help="CSV: a header line, then a patient a line")
    ],
    site: Site = None,
    yes: Annotated[bool, typer.Option("--yes", help="import without asking")] = False,
) -> None:
    """Enrol patients from a CSV file: each row a patient, their weight and height, and an IV
    plan at the site (columns in docs/console.md). The file is checked whole first; running
    it again creates nothing twice. Shows progress; exit 1 if a row was refused."""
    checked = importing.check(file.read())
    if checked.mistakes:
        for mistake in checked.mistakes:
            err.print(f"error: {mistake}")
        err.print("nothing was imported: correct the file and run it again")
        raise typer.Exit(1)
    session = _session()
    with _refusals():
        chosen = _site(session, site)
    where = chosen.display_name or chosen.id
    _ask(yes, f"Enrol {len(checked.rows)} patients at {where}?")
    with (
        _refusals(),
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=JSON,
        ) as progress,
    ):
        task = progress.add_task(f"Enrolling at {where}", total=len(checked.rows))
        outcomes = list(
            importing.enrol(
                session.calls,
                session.organisation,
                chosen.id,
                checked.rows,
                lambda _o: progress.advance(task),
            )
        )

    def table() -> Table:
        counts = {s: sum(o.state == s for o in outcomes) for s in ("imported", "skipped")}
        refused = len(outcomes) - sum(counts.values())
        t = _table(
            f"{counts['imported']} imported, {counts['skipped']} skipped, {refused} refused "
            f"at {where}",
            "line",
            "MRN",
            "outcome",
            "patient",
            "plan",
            "why",
        )
        for o in outcomes:
            t.add_row(str(o.line), o.mrn, o.state, o.patient_id, o.plan_id, o.detail)
        return t

    _emit(outcomes, table)
    if any(o.state == "refused" for o in outcomes):
        raise typer.Exit(1)


def _appointment(a: pb.Appointment, what: str) -> None:
    data = {
        "id": a.id,
        "status": pb.AppointmentStatus.Name(a.status).removeprefix("APPOINTMENT_STATUS_").lower(),
        "date": to_date(a.local_date),
        "start": views.clock(reads.minutes(a.local_start)),
        "chair_id": a.chair_id,
        "dose_grams": a.dose_grams,
    }

    def table() -> Table:
        t = _table(what, *data)
        t.add_row(*(str(v) for v in data.values()))
        return t

    _emit(data, table)


@app.command()
def expiring(site: Site = None, days: Annotated[int, typer.Option(min=0)] = 60) -> None:
    """Lots with vials on hand that expire within DAYS, soonest first."""
    session = _session()
    with _refusals():
        chosen = _site(session, site, stock=True)
        lots = reads.expiring_lots(session.calls, chosen.id, _today(chosen.time_zone), days)

    def table() -> Table:
        t = _table(
            f"Expiring within {days} days at {chosen.display_name or chosen.id}",
            "lot",
            "product",
            "expires",
            "days left",
            "on hand",
            "reserved",
        )
        for lot in lots:
            t.add_row(
                lot.lot_number,
                lot.product_id,
                str(lot.expiry),
                str(lot.days_left),
                str(lot.on_hand),
                str(lot.reserved),
            )
        return t

    _emit(lots, table)


@app.command("pick-list")
def pick_list(site: Site = None, date: Day = None) -> None:
    """The vials to pick for a day's reservations (default tomorrow)."""
    session = _session()
    with _refusals():
        chosen = _site(session, site, stock=True)
        day = date.date() if date else _today(chosen.time_zone) + dt.timedelta(days=1)
        lines = reads.pick_list(session.calls, chosen.id, day)

    def table() -> Table:
        t = _table(
            f"Pick list {chosen.display_name or chosen.id}, {day}",
            "appointment",
            "product",
            "dose (g)",
            "lot",
            "vials",
            "expires",
            "state",
        )
        for x in lines:
            t.add_row(
                x.appointment_id,
                x.product_name,
                x.dose_grams,
                x.lot_number,
                str(x.vials),
                str(x.expiry or ""),
                x.state,
            )
        return t

    _emit(lines, table)


@app.command()
def stock(site: Site = None) -> None:
    """Vials on hand, reserved and available per product at your sites (or one)."""
    session = _session()
    with _refusals():
        sites = reads.stock_sites(session.calls, session.sees)
        if site:
            sites = [_site(session, site, stock=True)]
        rows = reads.stock_levels(session.calls, sites)

    def table() -> Table:
        t = _table(
            "Stock levels",
            "site",
            "product",
            "on hand",
            "reserved",
            "available",
            "on hand (g)",
            "available (g)",
            "lots",
        )
        for r in rows:
            t.add_row(
                r.site,
                r.product,
                str(r.on_hand_vials),
                str(r.reserved_vials),
                str(r.available_vials),
                r.on_hand_grams,
                r.available_grams,
                str(r.lots),
            )
        return t

    _emit(rows, table)


@app.command()
def receive(
    scan: Annotated[str, typer.Argument(help="the GS1 element string, e.g. (01)…(17)…(10)…")],
    vials: Annotated[int, typer.Option(min=1, help="how many vials arrived")],
    unit_cost: Annotated[str, typer.Option(help="cost of one vial, e.g. 170.50")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code")] = "GBP",
    supplier: Annotated[str, typer.Option()] = "",
    site: Site = None,
    yes: Annotated[bool, typer.Option("--yes", help="receive without asking")] = False,
    request_id: RequestId = "",
) -> None:
    """Receive a delivery from a scanned GS1 DataMatrix: GTIN (01), expiry (17), lot (10)."""
    from decimal import Decimal, InvalidOperation

    from services.common.gs1 import ScanError

    try:
        cost = Decimal(unit_cost)
    except InvalidOperation:
        err.print("error: --unit-cost is an amount, e.g. 170.50")
        raise typer.Exit(2) from None
    session = _session()
    with _refusals():
        chosen = _site(session, site, stock=True)
        try:
            seen = reads.preview_scan(session.calls, scan)
        except ScanError as error:
            err.print(f"error: the scan could not be read: {error}")
            raise typer.Exit(1) from None
        what = seen.product or f"GTIN {seen.gtin} (no product of the catalogue)"
        _ask(
            yes,
            f"Receive {vials} vials of {what}, lot {seen.lot_number}, expiring "
            f"{seen.expiry}, at {chosen.display_name or chosen.id}?",
        )
        received = reads.receive(
            session.calls,
            chosen.id,
            scan,
            vials,
            cost,
            currency,
            supplier,
            request_id or f"cli-{uuid.uuid4()}",
        )

    def table() -> Table:
        t = _table("Received", "lot", "product", "vial (g)", "expires", "vials", "lot holds")
        t.add_row(
            received.lot_number,
            received.product,
            received.presentation_grams,
            str(received.expiry),
            str(received.vials),
            str(received.on_hand_vials),
        )
        return t

    _emit(received, table)


@app.command()
def reorder(site: Site = None) -> None:
    """Reorder suggestions and the site's purchase orders."""
    session = _session()
    with _refusals():
        chosen = _site(session, site, stock=True)
        suggestions, orders = reads.reorder(session.calls, chosen.id)

    def table() -> Table:
        t = _table(
            f"Suggested orders at {chosen.display_name or chosen.id}",
            "product",
            "vials",
            "grams",
            "cost",
            "order by",
            "stockout",
            "why",
        )
        for s in suggestions:
            t.add_row(
                s.product,
                f"{s.vials} x {s.presentation_grams} g",
                s.grams,
                s.estimated_cost,
                str(s.order_by or ""),
                str(s.stockout or ""),
                s.reason,
            )
        return t

    def both() -> Table:
        t = table()
        for o in orders:
            t.add_row(
                f"PO {o.reference or o.id}",
                o.state,
                "",
                "",
                str(o.expected or ""),
                "",
                "; ".join(o.lines),
            )
        return t

    _emit({"suggestions": suggestions, "purchase_orders": orders}, both)


@app.command()
def recall(
    product: Annotated[str, typer.Option(help="product id")],
    lot: Annotated[str, typer.Option(help="lot number")],
) -> None:
    """Trace a lot: the sites holding it and the patients who received it."""
    session = _session()
    with _refusals():
        trace = reads.recall_trace(session.calls, product, lot, session.sees)

    def table() -> Table:
        t = _table(
            f"Lot {lot} of {trace.product}: {len(trace.recipients)} recipients",
            "patient",
            "appointment",
            "site",
            "given (UTC)",
            "vials",
            "grams",
        )
        for r in trace.recipients:
            t.add_row(
                r.patient_id, r.appointment_id, r.site_id, r.administered, str(r.vials), r.grams
            )
        for h in trace.sites:
            t.add_row("", "", h.site_id, f"holds: {h.state}", str(h.on_hand_vials), "")
        return t

    _emit(trace, table)


def main() -> None:
    app(prog_name="infusion")


if __name__ == "__main__":
    main()
