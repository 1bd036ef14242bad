"""PlanSchedule through gRPC: the same schedule as the domain call on the same stored state,
the site's objective and the plans' usual slots as settings, every term and KPI in the reply,
and COMMIT booking race-safely (on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.type.dayofweek_pb2 import DayOfWeek
from google.type.timeofday_pb2 import TimeOfDay

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.db import Database
from services.common.identity import acting_as, service_caller
from services.scheduler.adapters.inventory_products import InventoryProducts
from services.scheduler.adapters.inventory_stock import InventoryStock
from services.scheduler.domain.optimiser import solve
from services.scheduler.usecases.bookings import Bookings
from services.scheduler.usecases.doses import Doses
from services.scheduler.usecases.records import Records
from services.scheduler.usecases.schedules import Schedules
from tests.integration.builders import assert_no_chair_minute_twice, patient_plan, site_with_chairs
from tests.integration.conftest import Platform, request_id


def propose(platform: Platform, site_id: str, **kw: object) -> pb.PlanScheduleResponse:
    fields: dict[str, object] = dict(
        site_id=site_id, horizon_days=14, mode=pb.PLAN_MODE_PROPOSE, time_limit_seconds=30, seed=3
    )
    fields.update(kw)
    return platform.scheduler.PlanSchedule(pb.PlanScheduleRequest(**fields))  # type: ignore[arg-type]


def slots(reply: pb.PlanScheduleResponse) -> list[tuple[str, str, int, int]]:
    return sorted(
        (
            p.therapy_plan_id,
            p.slot.chair_id,
            p.slot.local_date.day,
            p.slot.local_start.hours * 60 + p.slot.local_start.minutes,
        )
        for p in reply.proposals
    )


def test_the_reply_is_the_domain_schedule(platform: Platform, database_url: str) -> None:
    site, _ = site_with_chairs(platform, chairs=2, nurses=1, ratio=2)
    plans = [patient_plan(platform, site, f"MRN-{i}") for i in range(6)]
    reply = propose(platform, site.id)
    # the same stored state, planned by the domain directly
    url = (
        database_url.replace("test.db", "scheduler.db")
        if database_url.startswith("sqlite")
        else database_url
    )
    db = Database(url)
    products = InventoryProducts(
        platform.issuer.service_channel("scheduler", platform.inventory_address)
    )
    channel = platform.issuer.service_channel("scheduler", platform.inventory_address)
    try:
        records = Records(db, platform.clock, products.exists)
        bookings = Bookings(
            db, platform.clock, records, Doses(records, products.spec), InventoryStock(channel)
        )
        planner = Schedules(db, platform.clock, records, bookings)
        # direct use-case calls act as the scheduler itself (it reads every organisation)
        with acting_as(service_caller("scheduler")), db.read() as session:
            _, problem, needs, _ = planner.problem(session, site.id, None, 14)
        result = solve(problem, 30, 3)
    finally:
        channel.close()
        products.close()
        db.dispose()
    expected = sorted(
        (
            needs[p.request_id].plan.id,
            p.chair_id,
            p.day.day,
            p.start_minute,
        )
        for p in result.placements
    )
    assert slots(reply) == expected
    assert len(expected) == len(plans)
    assert reply.solver_status == result.status
    assert float(reply.objective) == pytest.approx(result.objective, abs=1e-3)


def test_objective_terms_and_kpis_are_reported(platform: Platform) -> None:
    site, _ = site_with_chairs(platform, chairs=2)
    for i in range(3):
        patient_plan(platform, site, f"MRN-{i}")
    reply = propose(platform, site.id)
    names = [t.name for t in reply.objective_terms]
    assert names == [t.name for t in reply.greedy_objective_terms]
    assert {"unplaced", "earliness_days", "lateness_days", "expected_overtime_minutes"} <= set(
        names
    )
    total = sum(float(t.cost) for t in reply.objective_terms)
    assert total == pytest.approx(float(reply.objective), abs=1e-3)
    assert float(reply.objective) <= float(reply.greedy_objective) + 1e-6
    assert float(reply.best_bound) <= float(reply.objective) + 1e-6
    assert reply.gap != ""
    k = reply.kpis
    assert k.placed == 3 and k.series_dropped == 0
    assert k.on_due_day_share and k.expected_overtime_minutes and k.daily_utilisation_spread
    assert reply.greedy_kpis.placed == 3


def test_the_site_objective_and_a_call_override_steer_the_plan(platform: Platform) -> None:
    # one chair a day, two infusions due Tuesday 1 December (window ±4): one gets Tuesday, the
    # other goes a day early or a day late. Lateness costs more by default: Monday. With a
    # site that finds lateness cheaper than earliness: Wednesday. A call may override again.
    site, _ = site_with_chairs(platform, chairs=1, nurses=1, ratio=1)
    for i in range(2):
        patient_plan(platform, site, f"MRN-{i}", maintenance_dose="2")
    # days of the month: Monday 30 November and Tuesday 1 December
    assert sorted(d for _, _, d, _ in slots(propose(platform, site.id))) == [1, 30]
    updated = platform.scheduler.UpdateSite(
        pb.UpdateSiteRequest(
            request_id=request_id(),
            site=pb.Site(
                id=site.id,
                etag=site.etag,
                schedule_objective=pb.ScheduleObjective(earliness_per_day=30, lateness_per_day=5),
            ),
            update_mask={"paths": ["schedule_objective"]},
        )
    ).site
    assert updated.schedule_objective.earliness_per_day == 30
    assert not updated.schedule_objective.HasField("placement")  # unset: the default
    got = platform.scheduler.GetSite(pb.GetSiteRequest(id=site.id)).site
    assert got.schedule_objective == updated.schedule_objective
    assert sorted(d for _, _, d, _ in slots(propose(platform, site.id))) == [1, 2]
    # this call only: a day early costs 1, a day late the site's 5
    back = propose(platform, site.id, objective=pb.ScheduleObjective(earliness_per_day=1))
    assert sorted(d for _, _, d, _ in slots(back)) == [1, 30]


def test_bad_objective_weights_are_refused(platform: Platform) -> None:
    site, _ = site_with_chairs(platform)
    with pytest.raises(grpc.RpcError) as bad:
        propose(platform, site.id, objective=pb.ScheduleObjective(duration_cv_percent=101))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "objective.duration_cv_percent" in (bad.value.details() or "")


def test_a_plan_keeps_its_usual_slot_and_planschedule_honours_it(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform, chairs=3)
    plan = patient_plan(
        platform,
        site,
        "MRN-U",
        usual_weekday=DayOfWeek.THURSDAY,
        usual_start=TimeOfDay(hours=10, minutes=30),
        usual_chair_id=chairs[2].id,
    )
    assert plan.usual_weekday == DayOfWeek.THURSDAY
    assert (plan.usual_start.hours, plan.usual_start.minutes) == (10, 30)
    read = platform.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id)).therapy_plan
    assert read.usual_chair_id == chairs[2].id and read.usual_weekday == DayOfWeek.THURSDAY
    keen = pb.ScheduleObjective(usual_weekday=100, usual_start_per_hour=20, overtime_per_minute=0)
    ((proposal),) = propose(platform, site.id, objective=keen).proposals
    assert dt.date(2026, 12, proposal.slot.local_date.day).isoweekday() == 4  # 3 December
    assert proposal.slot.chair_id == chairs[2].id
    assert (proposal.slot.local_start.hours, proposal.slot.local_start.minutes) == (10, 30)
    with pytest.raises(grpc.RpcError) as other_site:
        platform.scheduler.UpdateTherapyPlan(
            pb.UpdateTherapyPlanRequest(
                request_id=request_id(),
                therapy_plan=pb.TherapyPlan(id=plan.id, etag=read.etag, usual_chair_id="nope"),
                update_mask={"paths": ["usual_chair_id"]},
            )
        )
    assert other_site.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_two_commits_at_once_book_each_infusion_once(platform: Platform) -> None:
    site, _ = site_with_chairs(platform, chairs=2)
    plans = [patient_plan(platform, site, f"MRN-{i}") for i in range(4)]

    def commit(_: int) -> object:
        try:
            return platform.scheduler.PlanSchedule(
                pb.PlanScheduleRequest(
                    site_id=site.id,
                    horizon_days=14,
                    mode=pb.PLAN_MODE_COMMIT,
                    time_limit_seconds=30,
                    seed=1,
                    request_id=request_id(),
                )
            )
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(commit, range(2)))
    failures = {r for r in results if not isinstance(r, pb.PlanScheduleResponse)}
    assert failures <= {grpc.StatusCode.ABORTED}
    booked = platform.scheduler.ListAppointments(
        pb.ListAppointmentsRequest(site_id=site.id, page_size=100)
    ).appointments
    assert sorted(a.therapy_plan_id for a in booked) == sorted(p.id for p in plans)
    assert_no_chair_minute_twice(booked)
