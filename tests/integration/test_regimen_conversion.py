"""ConvertRegimen, SetPlanAuthorisation, SetPayerCaps and GetPlanCoverage through gRPC on
SQLite and PostgreSQL (docs/regimens.md): the hand-worked conversions of the unit tests
(tests/unit/test_regimen_sc_conversion.py, test_regimen_ramp_up.py) as the service gives them,
the due list following a converted version, bookings refused by the plan's coverage, bad input
and idempotent retries."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.type.date_pb2 import Date

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb
from tests.integration.builders import (
    book,
    date,
    make_site,
    patient_plan,
    product_id,
    site_with_chairs,
)
from tests.integration.conftest import Platform, request_id
from tests.integration.errors import error_reason, field_violations, precondition_types

LAST_IV = date(2026, 11, 20)


def iv_plan(p: Platform, mrn: str, site: pb.Site | None = None, **kw: object) -> pb.TherapyPlan:
    """70 kg (165 cm), Gammagard Liquid IV every 28 days, last given 20 Nov 2026."""
    site = site or make_site(p)
    fields: dict[str, object] = {
        "maintenance_dose": "2",
        "last_infusion_date": LAST_IV,
        **kw,
    }
    return patient_plan(p, site, mrn, "org-1", **fields)


def convert(p: Platform, plan: pb.TherapyPlan, **kw: object) -> pb.ConvertRegimenResponse:
    fields: dict[str, object] = {
        "therapy_plan_id": plan.id,
        "etag": plan.etag,
        "route": pb.ROUTE_SC,
        "product_id": product_id(p, "hizentra"),
        "reason": "home therapy",
        "request_id": request_id(),
        **kw,
    }
    reply: pb.ConvertRegimenResponse = p.scheduler.ConvertRegimen(
        pb.ConvertRegimenRequest(**fields)  # type: ignore[arg-type]
    )
    return reply


def d(value: Date) -> dt.date:
    return dt.date(value.year, value.month, value.day)


def test_gammagard_to_hizentra_in_mmn_at_1_to_1(platform: Platform) -> None:
    plan = iv_plan(platform, "MRN-1")
    reply = convert(platform, plan)
    c = reply.conversion
    # 70 kg × 2 g/kg = 140 g (4 × 30 + 20, the last IV dose as calculated) every 28 days;
    # MMN 1.00 × 140 g ÷ 4 weeks = 35 g a week = 10 + 10 + 10 + 4 + 1, exact;
    # 35 g × 100 ÷ 20 % = 175 mL; MMN takes Hizentra's CIDP 50 mL a site: ⌈175 ÷ 50⌉ = 4 sites
    assert (c.factor, c.cycle_grams, c.cycle_interval_days) == ("1", "140", 28)
    assert (c.weekly_grams, c.weekly_grams_given, c.grams_per_infusion) == ("35", "35", "35")
    assert (c.volume_ml, c.sites, c.site_max_ml) == ("175", 4, "50")
    assert (c.infusions_per_week, c.every_weeks, c.interval_days) == (1, 1, 7)
    assert d(c.first_date) == dt.date(2026, 11, 27)  # last IV 20 Nov + 7 days
    new = reply.therapy_plan
    assert (new.version, new.route, new.product_id) == (
        2,
        pb.ROUTE_SC,
        product_id(platform, "hizentra"),
    )
    assert (new.dose_basis, new.maintenance_dose, new.interval_days) == (
        pb.DOSE_BASIS_FIXED_GRAMS,
        "35",
        7,
    )
    assert (new.infusion_sites, d(new.regimen_start_date)) == (4, dt.date(2026, 11, 27))
    assert any("docs/clinical-rules.md#sc-dose" in line for line in c.rationale)
    # the due list follows the new version: the first SC dose on 27 Nov, not 28 days after IV
    due = platform.scheduler.ListDueInfusions(pb.ListDueInfusionsRequest(site_id=new.site_id))
    mine = [i for i in due.due_infusions if i.therapy_plan_id == plan.id]
    assert [(d(i.due_date), i.plan_version) for i in mine] == [(dt.date(2026, 11, 27), 2)]
    assert mine[0].authorisation.status == pb.AUTHORISATION_STATUS_UNSPECIFIED  # no coverage


def test_gammagard_to_hizentra_in_pi_at_1_37_three_infusions_a_week(platform: Platform) -> None:
    plan = iv_plan(platform, "MRN-2", indication=pb.INDICATION_PID)
    c = convert(platform, plan).conversion
    # 1.37 × 140 ÷ 4 = 47.95 g a week; weekly 48 g = 240 mL needs ⌈240 ÷ 25⌉ = 10 sites > 4;
    # twice a week 24 g (120 mL) needs 5 sites; three a week 47.95 ÷ 3 = 15.98 → 16 g,
    # 80 mL, ⌈80 ÷ 25⌉ = 4 sites, on days 0, 2 and 4; 48 g a week given
    assert (c.factor, c.weekly_grams, c.grams_per_infusion) == ("1.37", "47.95", "16")
    assert (c.volume_ml, c.sites, c.site_max_ml) == ("80", 4, "25")
    assert (c.infusions_per_week, list(c.infusion_days), c.weekly_grams_given) == (
        3,
        [0, 2, 4],
        "48",
    )
    assert [s.split(":")[0] for s in c.skipped] == ["weekly", "2 a week"]
    # validate_only gives the same figures without writing a version
    plan2 = iv_plan(platform, "MRN-3", indication=pb.INDICATION_PID)
    preview = convert(platform, plan2, validate_only=True, request_id="")
    assert preview.conversion.grams_per_infusion == "16"
    assert not preview.HasField("therapy_plan")
    again = platform.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan2.id)).therapy_plan
    assert (again.version, again.route) == (1, pb.ROUTE_IV)


def test_several_infusions_a_week_are_due_on_their_days(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    plan = iv_plan(platform, "MRN-4", site=site, indication=pb.INDICATION_PID)
    new = convert(platform, plan).therapy_plan
    due = platform.scheduler.ListDueInfusions(pb.ListDueInfusionsRequest(site_id=site.id))
    assert [d(i.due_date) for i in due.due_infusions if i.therapy_plan_id == plan.id] == [
        dt.date(2026, 11, 27)
    ]
    assert list(new.infusion_days) == [0, 2, 4]


def hyqvia(p: Platform) -> str:
    """HyQvia's unit sizes are not in the sources: the test configures 2.5 to 30 g at 10 %."""
    product = p.inventory.CreateProduct(
        inv.CreateProductRequest(
            product=inv.Product(
                code="hyqvia",
                brand="HyQvia",
                manufacturer="Takeda",
                ig_class=inv.IG_CLASS_FACILITATED_SCIG,
                concentration_percent="10",
                routes=[inv.ROUTE_FACILITATED_SC],
                presentations=[
                    inv.Presentation(grams=g, ml=str(int(float(g) * 10)))
                    for g in ("2.5", "5", "10", "20", "30")
                ],
                storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
            ),
            request_id=request_id(),
        )
    ).product
    return str(product.id)


def test_hyqvia_every_4_weeks_ramps_25_50_75_100_100_at_weeks_1_2_4_7_11(
    platform: Platform,
) -> None:
    site = make_site(platform)
    plan = iv_plan(platform, "MRN-5", site=site, maintenance_dose="1")
    reply = convert(platform, plan, route=pb.ROUTE_FACILITATED_SC, product_id=hyqvia(platform))
    c = reply.conversion
    # 70 kg × 1 g/kg = 70 g every 28 days → full HyQvia dose 70 × 1.00 = 70 g;
    # ¼ = 17.5 g, ½ = 35 g, ¾ = 52.5 g, then 70 g, 70 g; first HyQvia 20 Nov + 7 = 27 Nov
    assert [(s.week, s.day, s.fraction, s.grams) for s in c.ramp_up] == [
        (1, 0, "1/4", "17.5"),
        (2, 7, "1/2", "35"),
        (4, 21, "3/4", "52.5"),
        (7, 42, "1", "70"),
        (11, 70, "1", "70"),
    ]
    assert [d(s.date) for s in c.ramp_up][0] == dt.date(2026, 11, 27)
    assert d(c.steady_date) == dt.date(2026, 11, 27) + dt.timedelta(days=70 + 28)
    new = reply.therapy_plan
    assert (new.route, new.maintenance_dose, new.interval_days) == (
        pb.ROUTE_FACILITATED_SC,
        "70",
        28,
    )
    assert [(s.day, s.grams) for s in new.ramp_up] == [
        (0, "17.5"),
        (7, "35"),
        (21, "52.5"),
        (42, "70"),
        (70, "70"),
    ]
    # the due list shows the ramp's first step with its partial dose
    due = platform.scheduler.ListDueInfusions(pb.ListDueInfusionsRequest(site_id=site.id))
    mine = [i for i in due.due_infusions if i.therapy_plan_id == plan.id]
    assert [(d(i.due_date), i.ramp_step, i.dose_grams) for i in mine] == [
        (dt.date(2026, 11, 27), 1, "17.5")
    ]


def test_conversion_without_a_factor_is_refused_naming_the_rule_until_overridden(
    platform: Platform,
) -> None:
    plan = iv_plan(platform, "MRN-6", indication=pb.INDICATION_CIDP)
    cuvitru = product_id(platform, "cuvitru")
    with pytest.raises(grpc.RpcError) as refused:
        convert(platform, plan, product_id=cuvitru)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_types(refused.value) == ["CONVERSION_FACTOR_KNOWN"]
    assert error_reason(refused.value) == "CONVERSION_FACTOR_KNOWN"
    assert "no_conversion_factor" in (refused.value.details() or "")
    # an override without its reason is the caller's mistake
    with pytest.raises(grpc.RpcError) as bad:
        convert(platform, plan, product_id=cuvitru, factor_override=pb.FactorOverride(factor="1"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == ["factor_override.reason"]
    rid = request_id()
    ok = convert(
        platform,
        plan,
        product_id=cuvitru,
        factor_override=pb.FactorOverride(factor="1.2", reason="CIDP, clinic protocol"),
        request_id=rid,
    )
    # 1.2 × 140 ÷ 4 = 42 g a week; weekly 42 g (Cuvitru 1/2/4/8 g: 8 × 5 + 2) = 210 mL,
    # ⌈210 ÷ 60⌉ = 4 sites
    assert (ok.conversion.factor, ok.conversion.grams_per_infusion) == ("1.2", "42")
    assert "CIDP, clinic protocol" in ok.conversion.factor_source
    # a retry with the same request_id returns the first answer, no third version
    again = convert(
        platform,
        plan,
        product_id=cuvitru,
        factor_override=pb.FactorOverride(factor="1.2", reason="CIDP, clinic protocol"),
        request_id=rid,
    )
    assert again == ok
    current = platform.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id))
    assert current.therapy_plan.version == 2


def test_conversion_bad_input_and_stale_etag(platform: Platform) -> None:
    plan = iv_plan(platform, "MRN-7")
    with pytest.raises(grpc.RpcError) as bad:
        platform.scheduler.ConvertRegimen(
            pb.ConvertRegimenRequest(
                therapy_plan_id=plan.id,
                etag=plan.etag,
                frequency=pb.ScFrequency(infusions_per_week=3, every_weeks=2),
                two_weekly_start_days=10,
                request_id=request_id(),
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {
        "route",
        "product_id",
        "reason",
        "frequency",
        "two_weekly_start_days",
    }
    with pytest.raises(grpc.RpcError) as back:
        convert(platform, plan, route=pb.ROUTE_IV)  # back to IV needs the interval
    assert field_violations(back.value) == ["interval_days"]
    convert(platform, plan)
    with pytest.raises(grpc.RpcError) as stale:
        convert(platform, plan)  # the etag of version 1
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(stale.value) == "STALE_ETAG"


def test_back_to_iv_undoes_the_factor(platform: Platform) -> None:
    plan = iv_plan(platform, "MRN-8", indication=pb.INDICATION_PID)
    sc = convert(platform, plan).therapy_plan  # 3 × 16 g a week of Hizentra
    back = convert(
        platform,
        sc,
        route=pb.ROUTE_IV,
        product_id=product_id(platform, "gammagard-liquid"),
        interval_days=28,
        cycle_grams="16",
        last_dose_date=date(2026, 12, 4),
    )
    # 3 × 16 = 48 g a week × 4 weeks ÷ 1.37 = 140.15 g → 140 g (4 × 30 + 20) every 28 days;
    # the first IV dose when the next SC one would have been (4 Dec + 2 days)
    assert (back.conversion.factor, back.conversion.grams_per_infusion) == ("1.37", "140")
    assert d(back.conversion.first_date) == dt.date(2026, 12, 6)
    assert (back.therapy_plan.route, back.therapy_plan.interval_days) == (pb.ROUTE_IV, 28)
    assert list(back.therapy_plan.infusion_days) == []


def set_caps(p: Platform, plan_id: str, week: str, four_weeks: str, **kw: object) -> pb.PayerCaps:
    reply: pb.SetPayerCapsResponse = p.scheduler.SetPayerCaps(
        pb.SetPayerCapsRequest(
            payer_caps=pb.PayerCaps(
                therapy_plan_id=plan_id,
                payer="Acme Health",
                grams_per_7_days=week,
                grams_per_28_days=four_weeks,
                **kw,  # type: ignore[arg-type]
            ),
            request_id=request_id(),
        )
    )
    return reply.payer_caps


def authorise(
    p: Platform, plan_id: str, first: Date, last: Date, rid: str = "", **kw: object
) -> pb.PlanAuthorisation:
    reply: pb.SetPlanAuthorisationResponse = p.scheduler.SetPlanAuthorisation(
        pb.SetPlanAuthorisationRequest(
            authorisation=pb.PlanAuthorisation(
                therapy_plan_id=plan_id,
                payer="Acme Health",
                valid_from=first,
                valid_to=last,
                active=True,
                **kw,  # type: ignore[arg-type]
            ),
            request_id=rid or request_id(),
        )
    )
    return reply.authorisation


def test_conversion_refused_over_the_payer_caps(platform: Platform) -> None:
    plan = iv_plan(platform, "MRN-9", indication=pb.INDICATION_PID)
    caps = set_caps(platform, plan.id, "46", "184")  # Hizentra's example policy
    # three 16 g infusions a week = 48 g in every 7 days > 46 g
    with pytest.raises(grpc.RpcError) as refused:
        convert(platform, plan)
    assert precondition_types(refused.value) == ["PAYER_CAP"]
    assert "over 46 g per 7 days" in (refused.value.details() or "")
    # with an authorisation that lets the payer's caps be exceeded, it goes through
    authorise(
        platform,
        plan.id,
        date(2026, 11, 1),
        date(2027, 4, 30),
        cap_override_reason="payer letter of 20 Nov",
    )
    assert convert(platform, plan).conversion.grams_per_infusion == "16"
    # the caps' etag: the second write needs the first's
    with pytest.raises(grpc.RpcError) as stale:
        set_caps(platform, plan.id, "50", "200")
    assert stale.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(stale.value) == "ETAG_REQUIRED"
    rid = request_id()
    ask = pb.SetPayerCapsRequest(
        payer_caps=pb.PayerCaps(
            therapy_plan_id=plan.id,
            grams_per_7_days="50",
            grams_per_28_days="200",
            etag=caps.etag,
        ),
        request_id=rid,
    )
    updated = platform.scheduler.SetPayerCaps(ask).payer_caps
    assert (updated.grams_per_7_days, updated.etag != caps.etag) == ("50", True)
    # a retry with the same request_id answers the first result (the etag it sent is stale now)
    assert platform.scheduler.SetPayerCaps(ask).payer_caps == updated


def test_booking_refused_over_caps_and_outside_the_authorisation(platform: Platform) -> None:
    site, chairs = site_with_chairs(platform)
    # 70 kg × 0.5 g/kg = 35 g every 28 days, due Tue 1 Dec
    plan = patient_plan(platform, site, "MRN-10", maintenance_dose="0.5")
    set_caps(platform, plan.id, "30", "120")
    day = dt.date(2026, 12, 1)
    with pytest.raises(grpc.RpcError) as over:
        book(platform, plan, chairs[0], day, 9)
    assert over.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert precondition_types(over.value) == ["PAYER_CAP"]
    assert "35 g from 2026-11-25 to 2026-12-01, over 30 g per 7 days" in (
        over.value.details() or ""
    )
    coverage = platform.scheduler.GetPlanCoverage(
        pb.GetPlanCoverageRequest(therapy_plan_id=plan.id)
    )
    caps = coverage.payer_caps
    caps = set_caps(platform, plan.id, "42", "168", etag=caps.etag, authorisation_required=True)
    with pytest.raises(grpc.RpcError) as missing:
        book(platform, plan, chairs[0], day, 9)
    assert precondition_types(missing.value) == ["AUTHORISATION_COVERS"]
    due = platform.scheduler.ListDueInfusions(pb.ListDueInfusionsRequest(site_id=site.id))
    assert due.due_infusions[0].authorisation.status == pb.AUTHORISATION_STATUS_MISSING
    rid = request_id()
    auth = authorise(
        platform, plan.id, date(2026, 6, 1), date(2026, 12, 20), approved_doses=1, rid=rid
    )
    retried = authorise(
        platform, plan.id, date(2026, 6, 1), date(2026, 12, 20), approved_doses=1, rid=rid
    )
    assert retried == auth  # idempotent: one authorisation
    # due 1 Dec, authorised to 20 Dec: 19 days left, expiring
    due = platform.scheduler.ListDueInfusions(pb.ListDueInfusionsRequest(site_id=site.id))
    state = due.due_infusions[0].authorisation
    assert (state.status, state.authorisation_id, state.days_left) == (
        pb.AUTHORISATION_STATUS_EXPIRING,
        auth.id,
        19,
    )
    booked = book(platform, plan, chairs[0], day, 9)
    assert booked.dose_grams == "35"
    coverage = platform.scheduler.GetPlanCoverage(
        pb.GetPlanCoverageRequest(therapy_plan_id=plan.id, as_of=date(2026, 12, 1))
    )
    assert [a.id for a in coverage.authorisations] == [auth.id]
    assert coverage.patient_id == plan.patient_id
    # the audit trail names the patient of every coverage call
    from tests.integration.test_audit_trail import events

    audited = {
        e.method.rsplit("/", 1)[-1]
        for e in events(platform, patient_id=plan.patient_id)
        if e.outcome == "OK"
    }
    assert {"SetPayerCaps", "SetPlanAuthorisation", "GetPlanCoverage"} <= audited
    assert coverage.payer_caps.authorisation_required
    assert coverage.authorisation.status == pb.AUTHORISATION_STATUS_EXPIRING
    # a plan with a booking by its current route is not converted
    current = platform.scheduler.GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id))
    with pytest.raises(grpc.RpcError) as open_booking:
        convert(platform, current.therapy_plan)
    assert precondition_types(open_booking.value) == ["NO_OPEN_BOOKINGS"]
    assert booked.id in (open_booking.value.details() or "")
    # moving the booking keeps it within the one approved dose (the moved one is not counted)
    platform.scheduler.RescheduleAppointment(
        pb.RescheduleAppointmentRequest(
            id=booked.id,
            chair_id=chairs[1].id,
            local_date=date(2026, 12, 2),
            local_start=booked.local_start,
            etag=booked.etag,
            request_id=request_id(),
        )
    )


def test_coverage_bad_input(platform: Platform) -> None:
    plan = iv_plan(platform, "MRN-11")
    with pytest.raises(grpc.RpcError) as bad:
        platform.scheduler.SetPlanAuthorisation(
            pb.SetPlanAuthorisationRequest(
                authorisation=pb.PlanAuthorisation(
                    therapy_plan_id=plan.id,
                    valid_from=date(2026, 12, 1),
                    valid_to=date(2026, 11, 1),
                ),
                request_id=request_id(),
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"authorisation.payer", "authorisation.valid_to"}
    with pytest.raises(grpc.RpcError) as caps:
        set_caps(platform, plan.id, "50", "40")
    assert field_violations(caps.value) == ["payer_caps.grams_per_28_days"]
    with pytest.raises(grpc.RpcError) as unknown:
        platform.scheduler.GetPlanCoverage(pb.GetPlanCoverageRequest(therapy_plan_id="nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_inventory_forecast_follows_the_sc_version(
    platform: Platform, database_url: str
) -> None:
    """Three 16 g Hizentra infusions a week (PI) from Fri 27 Nov: the forecast pushed to the
    inventory has 16 g on days 0, 2 and 4 of each week, none on the IV interval."""
    from services.common.db import Database
    from services.common.identity import acting_as, service_caller
    from services.scheduler.adapters.inventory_forecast import ForecastPush
    from services.scheduler.adapters.inventory_products import InventoryProducts
    from services.scheduler.adapters.inventory_relay import StockRelay
    from services.scheduler.adapters.notify_relay import relay_to_notify
    from services.scheduler.usecases.bookings import Bookings
    from services.scheduler.usecases.doses import Doses
    from services.scheduler.usecases.records import Records
    from tests.integration.conftest import scheduler_database_url, stock_site

    site, _ = site_with_chairs(platform)
    stock_site(platform, site.id)
    plan = iv_plan(platform, "MRN-F", site=site, indication=pb.INDICATION_PID)
    new = convert(platform, plan).therapy_plan
    db = Database(scheduler_database_url(database_url))
    channel = platform.issuer.service_channel("scheduler", platform.inventory_address)
    notify_channel = platform.issuer.service_channel("scheduler", "127.0.0.1:9")
    relay = relay_to_notify(
        db, platform.clock, notify_channel, stock=StockRelay(db, platform.clock, channel).deliver
    )
    products = InventoryProducts(channel)
    try:
        records = Records(db, platform.clock, products.exists)
        bookings = Bookings(db, platform.clock, records, Doses(records, products.spec))
        with acting_as(service_caller("scheduler")):
            assert ForecastPush(db, platform.clock, records, bookings).push(horizon_days=20) == 1
        relay.run_once()
        forecast = platform.inventory.GetStockForecast(
            inv.GetStockForecastRequest(site_id=site.id, product_id=new.product_id, horizon_days=15)
        ).days
        demand = {
            d.date.day: d.forecast_demand_grams for d in forecast if d.forecast_demand_grams != "0"
        }
        # Fri 27, Sun 29 Nov, Tue 1 Dec; Fri 4, Sun 6, Tue 8 Dec
        assert demand == {27: "16", 29: "16", 1: "16", 4: "16", 6: "16", 8: "16"}
    finally:
        relay.stop()
        notify_channel.close()
        channel.close()
        db.dispose()


def test_plan_schedule_leaves_a_plan_over_its_caps_unplaced_naming_the_cap(
    platform: Platform,
) -> None:
    site, _ = site_with_chairs(platform)
    capped = patient_plan(platform, site, "MRN-12", maintenance_dose="0.5")  # 35 g, due 1 Dec
    free = patient_plan(platform, site, "MRN-13", maintenance_dose="0.5")
    set_caps(platform, capped.id, "30", "120")
    reply = platform.scheduler.PlanSchedule(
        pb.PlanScheduleRequest(
            site_id=site.id,
            start_date=date(2026, 11, 30),
            horizon_days=7,
            mode=pb.PLAN_MODE_COMMIT,
            time_limit_seconds=10,
            seed=1,
            request_id=request_id(),
        )
    )
    assert [p.therapy_plan_id for p in reply.proposals] == [free.id]
    assert reply.proposals[0].appointment_id
    (unplaced,) = reply.unplaced
    assert unplaced.therapy_plan_id == capped.id
    assert unplaced.reason.startswith("PAYER_CAP: payer_cap_exceeded: 35 g from")


def test_a_home_plan_is_not_booked_and_its_doses_are_recorded_with_their_lots(
    platform: Platform,
) -> None:
    site, chairs = site_with_chairs(platform)
    plan = iv_plan(platform, "MRN-14", site=site)
    new = convert(platform, plan, home_administration=True).therapy_plan
    assert (new.route, new.home_administration, new.maintenance_dose) == (pb.ROUTE_SC, True, "35")
    with pytest.raises(grpc.RpcError) as chair:
        book(platform, new, chairs[0], dt.date(2026, 11, 27), 9)
    assert precondition_types(chair.value) == ["HOME_ADMINISTRATION"]
    with pytest.raises(grpc.RpcError) as slots:
        platform.scheduler.FindSlots(pb.FindSlotsRequest(therapy_plan_id=plan.id))
    assert precondition_types(slots.value) == ["HOME_ADMINISTRATION"]

    def record(day: Date, rid: str, grams: str = "35") -> pb.RecordHomeInfusionResponse:
        reply: pb.RecordHomeInfusionResponse = platform.scheduler.RecordHomeInfusion(
            pb.RecordHomeInfusionRequest(
                therapy_plan_id=plan.id,
                given_on=day,
                grams_given=grams,
                scanned_lots=[pb.ScannedLot(lot_number="LOT-H1", vials=4)],
                request_id=rid,
            )
        )
        return reply

    with pytest.raises(grpc.RpcError) as ahead:
        record(date(2026, 11, 27), request_id())  # the site's today is 24 Nov
    assert field_violations(ahead.value) == ["given_on"]
    platform.clock.set(dt.datetime(2026, 11, 27, 18, 0, tzinfo=dt.UTC))
    rid = request_id()
    done = record(date(2026, 11, 27), rid)
    home = done.home_infusion
    assert (d(home.given_on), d(home.due_date), home.grams_given, home.plan_version) == (
        dt.date(2026, 11, 27),
        dt.date(2026, 11, 27),
        "35",
        2,
    )
    assert [(lot.lot_number, lot.vials) for lot in home.scanned_lots] == [("LOT-H1", 4)]
    assert d(done.next_due.due_date) == dt.date(2026, 12, 4)  # weekly from the dose given
    assert record(date(2026, 11, 27), rid) == done  # a retry records nothing more
    due = platform.scheduler.ListDueInfusions(pb.ListDueInfusionsRequest(site_id=site.id))
    assert [d(i.due_date) for i in due.due_infusions if i.therapy_plan_id == plan.id] == [
        dt.date(2026, 12, 4)
    ]
    # a chair plan's doses are completed in the chair, not recorded as home doses
    other = iv_plan(platform, "MRN-15", site=site)
    with pytest.raises(grpc.RpcError) as not_home:
        platform.scheduler.RecordHomeInfusion(
            pb.RecordHomeInfusionRequest(
                therapy_plan_id=other.id,
                given_on=date(2026, 11, 27),
                grams_given="35",
                request_id=request_id(),
            )
        )
    assert precondition_types(not_home.value) == ["HOME_ADMINISTRATION"]


def test_the_older_label_factor_comes_from_the_catalogue(platform: Platform) -> None:
    hizentra = platform.inventory.GetProduct(inv.GetProductRequest(id="hizentra")).product
    assert [(f.factor, f.label_version) for f in hizentra.conversion_factors] == [
        ("1.37", "current"),
        ("1.53", "older"),
    ]
    plan = iv_plan(platform, "MRN-16", indication=pb.INDICATION_PID)
    c = convert(platform, plan, label_version="older").conversion
    # 1.53 × 140 ÷ 4 = 53.55 g a week: weekly 54 g (270 mL, 11 sites) and twice 27 g (135 mL,
    # 6 sites) need more than 4 sites; three a week 17.85 → 18 g, 90 mL, ⌈90 ÷ 25⌉ = 4 sites
    assert (c.factor, c.weekly_grams, c.grams_per_infusion, c.sites) == ("1.53", "53.55", "18", 4)
    assert "(older label)" in c.factor_source


def test_a_product_without_sc_figures_is_refused_until_configured(platform: Platform) -> None:
    product = platform.inventory.CreateProduct(
        inv.CreateProductRequest(
            product=inv.Product(
                code="new-scig",
                brand="New SCIg",
                manufacturer="Lab",
                ig_class=inv.IG_CLASS_SCIG,
                concentration_percent="20",
                routes=[inv.ROUTE_SC],
                presentations=[inv.Presentation(grams="2", ml="10")],
                storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
                conversion_factors=[inv.ConversionFactor(indication="MMN", factor="1")],
            ),
            request_id=request_id(),
        )
    ).product
    plan = iv_plan(platform, "MRN-17")
    with pytest.raises(grpc.RpcError) as refused:
        convert(platform, plan, product_id=product.id)
    # its factor is in the catalogue, its volume per site is not
    assert precondition_types(refused.value) == ["SC_PRODUCT_CONFIGURED"]
    configured = platform.inventory.UpdateProduct(
        inv.UpdateProductRequest(
            product=inv.Product(
                id=product.id,
                etag=product.etag,
                sc_administration=inv.ScAdministration(site_max_ml="40", max_sites=4),
            ),
            update_mask=FieldMask(paths=["sc_administration"]),
            request_id=request_id(),
        )
    ).product
    assert configured.sc_administration.site_max_ml == "40"
    platform.forget_products()
    c = convert(platform, plan, product_id=product.id).conversion
    # MMN 1:1: 35 g a week of 2 g vials → 34 g (tie, lower), 170 mL, ⌈170 ÷ 40⌉ = 5 sites > 4:
    # twice a week 17.5 → 18 g, 90 mL, 3 sites
    assert (c.infusions_per_week, c.grams_per_infusion, c.sites, c.site_max_ml) == (
        2,
        "18",
        3,
        "40",
    )
