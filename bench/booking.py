"""Booking on PostgreSQL: BookAppointment throughput and p99 with 32
calls in flight, and FindSlots p99 for a 14-day window at a 30-chair site.

The scheduler and the inventory (for the product catalogue) run as processes, as under `make
run`, on a throwaway database created on 127.0.0.1:5432 and dropped afterwards. The site has
30 chairs, opens 08:00–18:00 on weekdays with 8 nurses at 1:4 and 2 starts per nurse per quarter
hour. Setup (through the RPCs) makes one patient and plan per booking to come, so every call
books a real infusion, each on its own chair-day: at 08:00 on the first 15 chairs and 08:15 on
the others (16 starts per quarter hour are allowed; 30 at once would exceed it). Consecutive
calls go to different days (see booking_requests), so in-flight calls mostly hold different
day locks; calls for the same day queue on its lock, as real bookings do. Every request carries
its own request_id.

FindSlots is measured one call at a time (latency, not throughput) for a plan with a 14-day
search window over the booked days, so every day has 30 chairs of bookings to search around.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
from google.type.timeofday_pb2 import TimeOfDay
from sqlalchemy import create_engine, text

from bench.harness import (
    ORG,
    channel,
    conninfo,
    dev_issuer,
    environment,
    load,
    measured_load,
    operator_token,
    running,
    throwaway_database,
)
from bench.lean import count, lean_process
from demo.builder import Builder, pb_date, shifts
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.issuer.local import LocalIssuer

CHAIRS = 30
BOOKINGS = int(os.environ.get("BENCH_BOOKINGS", "6000"))
"""Patients and plans made before the run, one per booking (BENCH_BOOKINGS for a short run;
a call past the last one replays an earlier request_id and is not a new booking)."""
BOOK = "/infusion.scheduler.v1.SchedulerService/BookAppointment"
FIND = "/infusion.scheduler.v1.SchedulerService/FindSlots"


@contextmanager
def services(url: str, issuer: LocalIssuer) -> Iterator[tuple[str, str, int]]:
    databases = {"scheduler": url, "inventory": f"sqlite:///{tempfile.mkdtemp()}/inventory.db"}
    env = environment(issuer, databases, SCHEDULER_JOBS="0", INVENTORY_JOBS="0")
    with running(env, ("inventory", "scheduler")) as processes:
        yield (
            processes.addresses["scheduler"],
            processes.addresses["inventory"],
            processes.pid("scheduler"),
        )


def weekdays_from(first: dt.date) -> Iterator[dt.date]:
    day = first
    while True:
        if day.isoweekday() <= 5:
            yield day
        day += dt.timedelta(days=1)


def prepare(
    sch: Any, stock: Any, product_id: str, first: dt.date
) -> tuple[pb.Site, list[pb.Chair], list[str]]:
    build = Builder(sch, stock, ORG, ids=lambda label: f"bench-{label}")
    site = build.site(
        name="Bench centre",
        capacity=pb.SiteCapacity(
            nurse_shifts=shifts(8), nurse_ratio=4, start_limit=2, turnover_minutes=15
        ),
    )
    chairs = build.chairs(site.id, CHAIRS)

    def plan(i: int) -> str:
        _, made = build.enrol(
            f"B{i:06d}",
            site.id,
            product_id,
            first,
            measured_on=first - dt.timedelta(days=7),
            height="170",
            given="Bench",
            family=f"Patient {i}",
            born=dt.date(1970, 1, 1),
            key=str(i),
        )
        return str(made.id)

    with ThreadPoolExecutor(16) as pool:
        plans = list(pool.map(plan, range(BOOKINGS + 1)))
    return site, chairs, plans


def booking_requests(chairs: list[pb.Chair], plans: list[str], first: dt.date) -> list[bytes]:
    """Call i books day i mod D, chair (i div D) mod 30: consecutive calls go to different
    days, as a booking desk's do, so they take different day locks (one call per chair-day)."""
    days_needed = -(-len(plans) // CHAIRS)
    calendar = weekdays_from(first)
    days = [next(calendar) for _ in range(days_needed)]
    out = []
    for i, plan_id in enumerate(plans):
        day, chair = days[i % days_needed], (i // days_needed) % CHAIRS
        out.append(
            pb.BookAppointmentRequest(
                therapy_plan_id=plan_id,
                chair_id=chairs[chair].id,
                local_date=pb_date(day),
                local_start=TimeOfDay(hours=8, minutes=0 if chair < CHAIRS // 2 else 15),
                request_id=f"bench-book-{i}",
            ).SerializeToString()
        )
    return out


def overlaps(url: str) -> int:
    """Pairs of active bookings sharing a chair-minute (with turnover): must be 0."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return int(
                c.scalar(
                    text(
                        "SELECT count(*) FROM appointments a JOIN appointments b "
                        "ON a.chair_id = b.chair_id AND a.id < b.id "
                        "AND a.start_at < b.end_at + interval '15 minutes' "
                        "AND b.start_at < a.end_at + interval '15 minutes' "
                        "WHERE a.status = 'BOOKED' AND b.status = 'BOOKED'"
                    )
                )
                or 0
            )
    finally:
        engine.dispose()


LEAN_PLANS = 40_000
"""Plans of the lean baseline: it books several times as fast as the service, and a request
past the last plan would replay an earlier request_id (a cheap answer that flatters it)."""


def seed_lean(url: str) -> list[str]:
    """The lean site and chairs from what the bench made through the RPCs, and LEAN_PLANS
    plans at that site, each with the dose and chair time of a booking the real run made (the
    bench's patients are alike, so their plans are too). Returns the plans' ids."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO lean_sites SELECT id, time_zone, "
            "coalesce((capacity->>'turnover_minutes')::int, 0) FROM sites"
        )
        conn.execute("INSERT INTO lean_chairs SELECT id, site_id, active FROM chairs")
        conn.execute(
            "INSERT INTO lean_plans SELECT 'lean-plan-' || n, 'lean-patient-' || n, s.id, "
            "a.product_id, a.dose_grams, a.chair_minutes FROM generate_series(1, %s) n, "
            "(SELECT id FROM sites LIMIT 1) s, "
            "(SELECT product_id, dose_grams, chair_minutes FROM appointments LIMIT 1) a",
            (LEAN_PLANS,),
        )
    return [f"lean-plan-{n}" for n in range(1, LEAN_PLANS + 1)]


def lean_overlaps(url: str) -> int:
    """Pairs of lean bookings sharing a chair-minute (with turnover): must be 0."""
    return count(
        url,
        "SELECT count(*) FROM lean_bookings a JOIN lean_bookings b "
        "ON a.chair_id = b.chair_id AND a.id < b.id "
        "AND a.start_at < b.end_at + interval '15 minutes' "
        "AND b.start_at < a.end_at + interval '15 minutes'",
    )


def run(seconds: float, concurrency: int, log: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    first = dt.date.today() + dt.timedelta(days=7)
    with (
        dev_issuer() as issuer,
        throwaway_database("booking") as url,
        services(url, issuer) as (scheduler, inventory, pid),
    ):
        token = operator_token(issuer)
        sch = scheduler_pb2_grpc.SchedulerServiceStub(channel(scheduler, token))
        stock = inventory_pb2_grpc.InventoryServiceStub(channel(inventory, token))
        product = stock.GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product.id
        log(f"booking bench: creating {BOOKINGS} patients and plans …")
        site, chairs, plans = prepare(sch, stock, product, first)
        searcher, plans = plans[-1], plans[:-1]
        log("booking bench: BookAppointment …")
        name = "BookAppointment (30 chairs, a plan per call)"
        requests = booking_requests(chairs, plans, first)
        results[name] = measured_load(
            pid, url, scheduler, BOOK, requests, seconds, concurrency, token=token
        )
        # the service's own CPU per booking: its ceiling on one core is 1 s / this
        cpu_ms = results[name]["cpu_ms"]["server"]
        log(f"booking bench: service CPU ms per BookAppointment call: {cpu_ms}")
        find = pb.FindSlotsRequest(
            therapy_plan_id=searcher,
            start_date=pb_date(first),
            end_date=pb_date(first + dt.timedelta(days=13)),
        )
        log("booking bench: FindSlots …")
        results["FindSlots (14 days, 30 chairs, 1 in flight)"] = load(
            scheduler, FIND, find.SerializeToString(), seconds, 1, token=token
        )
        booked = len(
            sch.ListAppointments(
                pb.ListAppointmentsRequest(site_id=site.id, page_size=1000)
            ).appointments
        )
        checks = {
            "overlapping_bookings": overlaps(url),
            "first_page_of_bookings": booked,
            "booking_service_cpu_ms_per_call": cpu_ms,
        }
        lean = "BookAppointment (30 chairs, a plan per call), lean baseline"
        log("booking bench: BookAppointment, lean baseline …")
        with lean_process(url) as (address, lean_pid):
            lean_requests = booking_requests(chairs, seed_lean(url), first)
            results[lean] = measured_load(
                lean_pid, url, address, BOOK, lean_requests, seconds, concurrency
            )
        results[name]["lean_baseline"] = lean  # the table gives the real path's share of it
        checks["lean_overlapping_bookings"] = lean_overlaps(url)
    return {"results": results, "checks": checks}
