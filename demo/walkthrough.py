"""`make demo`: a day at an infusion centre, through the three services' public APIs, printing
what each service did: a plan and its dose, stock received, a slot found and booked, the
vials reserved (through the scheduler's outbox), the infusion given and the vials dispensed
with the lot trace, a reorder suggestion, and a recall that reaches the patient's record and
the pharmacy's notifications.

The services run as processes on SQLite in a temporary directory (nothing of `make run`'s data
is touched), on free ports unless ``<SERVICE>_LISTEN`` says where, with a development token
issuer of their own there, and stop at the end. The walk-through calls as a day unit's
operator (the roles of its steps) and reads notify as a hospital system would (the
integration role).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from demo.builder import ALL_DAYS, Builder, pb_date, shifts
from demo.centre import load_notify
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.clock import zone_where_the_day_begins
from services.issuer.issuer import OPERATOR_ROLES
from services.issuer.local import LocalIssuer
from services.launcher import (
    SERVICES,
    LaunchError,
    ServiceProcesses,
    check_settings,
    free_endpoints,
    free_port,
    running,
    service_environment,
)

ORG = "walkthrough"


def say(step: str, text: str) -> None:
    print(f"\n[{step}] {text}", flush=True)


def detail(text: str) -> None:
    print(f"    {text}", flush=True)


@contextmanager
def running_services() -> Iterator[tuple[dict[str, str], LocalIssuer]]:
    """The three services on ``<SERVICE>_LISTEN`` where set, else on ports free now (so a
    `make run`, another demo or a test run elsewhere on the machine is never in the way), with
    SQLite, their logs and a development token issuer in a new temporary directory."""
    endpoints = free_endpoints()
    try:
        for endpoint in endpoints:  # before any work: a taken port is refused at once
            endpoint.check_free()
    except LaunchError as e:
        raise SystemExit(f"make demo: {e}") from None
    var = Path(tempfile.mkdtemp(prefix="infusion-demo-"))
    issuer = LocalIssuer(var / "issuer", f"127.0.0.1:{free_port()}")
    env = service_environment(endpoints, {**os.environ, **issuer.service_environment()})
    for name in SERVICES:
        env[f"{name.upper()}_DATABASE_URL"] = f"sqlite:///{var / name}.db"
        env[f"{name.upper()}_SHUTDOWN_GRACE_SECONDS"] = "1"
    # today's visit is hours away: a 2 h reminder as well as the usual 72 h and 24 h ones
    env["SCHEDULER_REMINDER_OFFSETS_HOURS"] = "72,24,2"
    try:
        check_settings(env)
    except LaunchError as e:
        raise SystemExit(f"make demo: {e}") from None
    subprocess.run(
        [sys.executable, "-m", "services.inventory", "seed"],
        env=env,
        check=True,
        capture_output=True,
    )
    with ExitStack() as logs:
        files = {name: logs.enter_context((var / f"{name}.log").open("ab")) for name in SERVICES}

        def to_log(service: str, line: str) -> None:
            files[service].write(f"{line}\n".encode())
            files[service].flush()

        try:
            issuer.start(logs.enter_context((var / "issuer.log").open("wb")))
            logs.callback(issuer.stop)
            with running(ServiceProcesses(endpoints, env, to_log, files.get)) as services:
                yield services.addresses, issuer
        except (LaunchError, RuntimeError) as e:
            raise SystemExit(f"make demo: {e} (logs: {var})") from None
        finally:
            print(f"\n(service logs: {var})", flush=True)


def wait_for(what: str, check: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def walk(addresses: dict[str, str], issuer: LocalIssuer) -> None:
    operator = StaticToken(issuer.issuer.user_token(OPERATOR_ROLES, ORG))
    hospital_system = StaticToken(issuer.token("integration", ORG))
    sch = scheduler_pb2_grpc.SchedulerServiceStub(
        open_channel(addresses["scheduler"], None, operator)
    )
    stock = inventory_pb2_grpc.InventoryServiceStub(
        open_channel(addresses["inventory"], None, operator)
    )
    note = notify_pb2_grpc.NotifyServiceStub(
        open_channel(addresses["notify"], None, hospital_system)
    )
    load_notify(addresses["notify"], operator)
    # The chair's steps are accepted only on the visit's local day, and the walk-through runs
    # on the real clock: its unit is in a zone whose day has just begun, so the visit it books
    # for today is hours ahead (with a reminder still to come) and can be attended now.
    zone = zone_where_the_day_begins(dt.datetime.now(dt.UTC))
    today = dt.datetime.now(ZoneInfo(zone)).date()
    day = today

    build = Builder(sch, stock, ORG, ids=lambda label: f"demo-{label}")
    say("site", "the scheduler gets a day unit; the inventory a pharmacy with the same id")
    site = build.site(
        name="Walk-through day unit",
        tz=zone,
        days=ALL_DAYS,
        capacity=pb.SiteCapacity(nurse_shifts=shifts(2, ALL_DAYS)),
    )
    (chair,) = build.chairs(site.id, 1)
    build.stock_site(site.id, site.time_zone)
    detail(f"site {site.id} ({zone}), {chair.display_name}, 2 nurses at 1:4 every day")

    say("stock", "the pharmacy receives two lots of Gammagard Liquid 10 g vials")
    product = stock.GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product
    for lot, months, vials in (("GL-WALK-A", 6, 5), ("GL-WALK-B", 20, 40)):
        expiry = today + dt.timedelta(days=30 * months)
        received = build.receive(site.id, product.id, lot, expiry, vials, supplier="Wholesaler")
        detail(f"lot {lot}: {received.on_hand_vials} vials, expires {expiry}")

    say("plan", "a 70 kg patient with MMN: 1 g/kg every 4 weeks")
    _, plan = build.enrol("WALK-1", site.id, product.id, day, measured_on=today)
    dose = sch.CalculateDose(
        pb.CalculateDoseRequest(therapy_plan_id=plan.id, dosing_date=pb_date(day))
    ).calculation
    detail(
        f"dose {dose.total_grams} g as "
        + ", ".join(f"{v.count} × {v.grams} g" for v in dose.days[0].vials)
        + f"; {dose.days[0].chair_minutes} chair minutes"
    )

    say("book", "FindSlots in the due window, then BookAppointment on the best slot")
    slots = sch.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan.id, max_results=3)).slots
    best = slots[0]
    detail(
        f"best slot: {best.local_date.day:02d}/{best.local_date.month:02d} "
        f"{best.local_start.hours:02d}:{best.local_start.minutes:02d}, stock short: "
        f"{best.stock_short}"
    )
    appointment = build.book(
        plan.id, best.chair_id, best.local_date, best.local_start.hours, best.local_start.minutes
    )
    detail(f"appointment {appointment.id}: {pb.AppointmentStatus.Name(appointment.status)}")

    say("reserve", "the scheduler's outbox relay asks the inventory to reserve the vials")
    reservation = wait_for(
        "the reservation",
        lambda: next(
            iter(stock.ListReservations(inv.ListReservationsRequest(site_id=site.id)).reservations),
            None,
        ),
    )
    detail(
        "reserved "
        + ", ".join(
            f"{x.vials} × {x.presentation_grams} g of lot {x.lot_number}" for x in reservation.lines
        )
        + " (first expiry first)"
    )

    # the relay writes the outcome back on the appointment once ReserveStock has answered,
    # a moment after the reservation exists: wait for it rather than race it
    def stock_known() -> pb.Appointment | None:
        a = sch.GetAppointment(pb.GetAppointmentRequest(id=appointment.id)).appointment
        return a if a.stock_status else None

    shown = wait_for("the appointment's stock status", stock_known)
    detail(f"the appointment shows stock {shown.stock_status}")

    say("remind", "the booking scheduled the patient's reminders; the job sends each at its time")
    for r in shown.reminders:
        when = r.due_time.ToDatetime(dt.UTC)
        detail(
            f"{r.offset} before: {when:%a %d %b %H:%M} UTC, {pb.ReminderStatus.Name(r.status)[16:]}"
        )
    detail("on the day, the nurse checks the patient in and starts the infusion")
    sch.CheckIn(pb.CheckInRequest(id=appointment.id, request_id="demo-checkin"))
    sch.StartInfusion(pb.StartInfusionRequest(id=appointment.id, request_id="demo-start"))

    say("complete", "CompleteInfusion with the lots scanned at the chair")
    done = sch.CompleteInfusion(
        pb.CompleteInfusionRequest(
            id=appointment.id,
            grams_given=dose.total_grams,
            scanned_lots=[
                pb.ScannedLot(lot_number=x.lot_number, vials=x.vials) for x in reservation.lines
            ],
            request_id="demo-complete",
        )
    )
    due = done.next_due.due_date
    detail(f"next infusion due {due.day:02d}/{due.month:02d}/{due.year}")

    say("dispense", "the relay records the dispense: who got which lot")
    lot_number = reservation.lines[0].lot_number
    recipients = wait_for(
        "the lot trace",
        lambda: (
            stock.ListLotRecipients(
                inv.ListLotRecipientsRequest(product_id=product.id, lot_number=lot_number)
            ).administrations
        ),
    )
    for a in recipients:
        detail(f"lot {a.lot_number}: {a.grams_administered} g to patient {a.patient_id}")

    say("reorder", "a reorder policy: keep 500 g, order in cases of 10 vials")
    stock.SetReorderPolicy(
        inv.SetReorderPolicyRequest(
            request_id="demo-policy",
            policy=inv.ReorderPolicy(
                site_id=site.id,
                product_id=product.id,
                lead_time_days=14,
                safety_stock_grams="500",
                review_period_days=7,
                order_presentation_grams="10",
                case_vials=10,
                maximum_grams="1000",
            ),
        )
    )
    for s in stock.ListReorderSuggestions(
        inv.ListReorderSuggestionsRequest(site_id=site.id)
    ).suggestions:
        detail(f"order {s.vials} × {s.presentation_grams} g: {s.reason}")

    say("recall", f"the manufacturer recalls lot {lot_number}")
    recall = stock.RecallLot(
        inv.RecallLotRequest(
            product_id=product.id,
            lot_number=lot_number,
            reason="manufacturer withdrawal",
            request_id="demo-recall",
        )
    )
    detail(f"{len(recall.lots)} lot(s) RECALLED; {recall.recipients} recipient(s) on record")
    notified = wait_for(
        "the recall notification",
        lambda: (
            note.ListNotifications(
                npb.ListNotificationsRequest(topic=npb.TOPIC_LOT_RECALLED)
            ).notifications
        ),
    )
    detail(f"notify holds {len(notified)} LOT_RECALLED notification(s) for the pharmacy")
    print(
        "\nDone: plan → book → reserve → remind → complete → dispense → reorder → recall.",
        flush=True,
    )


def main() -> int:
    with running_services() as (addresses, issuer):
        walk(addresses, issuer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
