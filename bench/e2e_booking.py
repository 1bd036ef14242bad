"""End-to-end booking on PostgreSQL: 16 clients book appointments while
the scheduler's outbox relay turns every booking into an inventory reservation. The rate is
bookings whose vials are reserved per second, from the first call until the last reservation
exists. The three services run as processes, the scheduler and the inventory each on its own
throwaway database; setup is bench/booking.py's (30 chairs, one plan per booking), with enough
stock that no reservation is refused.

"Reminder scheduled": a booking writes its reminders (72 h and 24 h before) in its own
transaction, so every booking counted has them; the check counts the bookings that show both.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.booking import BOOK, booking_requests, prepare
from bench.harness import (
    channel,
    dev_issuer,
    environment,
    load,
    operator_token,
    running,
    throwaway_database,
)
from demo.builder import Builder
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.issuer.local import LocalIssuer

LOTS, VIALS_PER_LOT = 40, 1000


@contextmanager
def system(scheduler_url: str, inventory_url: str, issuer: LocalIssuer) -> Iterator[dict[str, str]]:
    databases = {
        "scheduler": scheduler_url,
        "inventory": inventory_url,
        "notify": f"sqlite:///{tempfile.mkdtemp()}/notify.db",
    }
    with running(environment(issuer, databases), ("notify", "inventory", "scheduler")) as s:
        yield s.addresses


def run(seconds: float, concurrency: int, log: Callable[[str], None]) -> dict[str, Any]:
    first = dt.date.today() + dt.timedelta(days=7)
    with (
        dev_issuer() as issuer,
        throwaway_database("e2e_scheduler") as sched_url,
        throwaway_database("e2e_inventory") as inv_url,
        system(sched_url, inv_url, issuer) as addresses,
    ):
        token = operator_token(issuer)
        sch = scheduler_pb2_grpc.SchedulerServiceStub(channel(addresses["scheduler"], token))
        stock = inventory_pb2_grpc.InventoryServiceStub(channel(addresses["inventory"], token))
        product = stock.GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product.id
        log("e2e booking bench: creating patients and plans …")
        site, chairs, plans = prepare(sch, stock, product, first)
        build = Builder(sch, stock, ids=lambda label: f"e2e-{label}")
        build.stock_site(site.id, site.time_zone)
        for n in range(LOTS):
            build.receive(
                site.id, product, f"E2E-{n:03d}", first + dt.timedelta(days=700), VIALS_PER_LOT
            )
        log(f"e2e booking bench: BookAppointment with {concurrency} clients …")
        began = time.monotonic()
        booked = load(
            addresses["scheduler"],
            BOOK,
            booking_requests(chairs, plans[:-1], first),
            seconds,
            concurrency,
            token=token,
        )

        def appointments() -> tuple[int, int]:
            """Bookings, and bookings with both reminders scheduled."""
            total, reminded, token = 0, 0, ""
            while True:
                page = sch.ListAppointments(
                    pb.ListAppointmentsRequest(site_id=site.id, page_size=1000, page_token=token)
                )
                total += len(page.appointments)
                reminded += sum(
                    [r.status for r in a.reminders] == [pb.REMINDER_STATUS_SCHEDULED] * 2
                    for a in page.appointments
                )
                token = page.next_page_token
                if not token:
                    return total, reminded

        # calls still in flight when the load stopped may have committed too: count bookings
        # in the scheduler, not the load's answers
        wanted, reminded = appointments()

        def reserved() -> int:
            total, token = 0, ""
            while True:
                page = stock.ListReservations(
                    inv.ListReservationsRequest(site_id=site.id, page_size=1000, page_token=token)
                )
                total += len(page.reservations)
                token = page.next_page_token
                if not token:
                    return total

        deadline = time.monotonic() + 600
        count = reserved()
        while count < wanted and time.monotonic() < deadline:
            time.sleep(1)
            count = reserved()
        elapsed = time.monotonic() - began
        result = {
            "calls": count,
            "errors": booked["errors"],
            "seconds": elapsed,
            "calls_per_second": count / elapsed,
            "p50_ms": booked["p50_ms"],
            "p99_ms": booked["p99_ms"],
        }
        checks = {
            "bookings": wanted,
            "answered_by_the_load": int(booked["calls"] - booked["errors"]),
            "reserved": count,
            "reminders_scheduled": reminded,
        }
    return {
        "results": {
            f"booked, reserved and reminders scheduled end to end ({concurrency} clients)": result
        },
        "checks": checks,
    }
