"""The ``infusion`` command line against real services with the demo centre
(tests/integration/console_support.py): each command's table and JSON, booking and cancelling,
and a refused call printing the service's reason with a non-zero exit status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from demo import centre
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.cli.__main__ import app
from tests.integration.console_support import Platform, running_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("cli")) as running:
        yield running


def run(platform: Platform, role: str, *args: str, code: int = 0) -> Any:
    env = {
        "INFUSION_TOKEN": platform.issuer.issuer.role_token(role, centre.ORG),
        "SCHEDULER_ADDRESS": platform.scheduler_address,
        "INVENTORY_ADDRESS": platform.inventory_address,
        "NOTIFY_ADDRESS": platform.notify_address,
        "COLUMNS": "240",  # a wide terminal: table cells on one line
    }
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def as_json(platform: Platform, role: str, *args: str) -> Any:
    return json.loads(run(platform, role, "--json", *args).stdout)


def booking(plan: str, slot: dict[str, Any], start: str = "") -> list[str]:
    """``infusion book`` of ``plan`` in ``slot`` (at ``start`` instead of the slot's)."""
    return [
        "book",
        plan,
        "--chair",
        slot["chair_id"],
        "--date",
        slot["date"],
        "--start",
        start or slot["start"],
        "--yes",
    ]


def test_board_as_table_and_json(platform: Platform) -> None:
    day = platform.booked_day.isoformat()
    data = as_json(platform, "nurse", "board", "--date", day)
    assert data["site"] == platform.site_id and data["date"] == day
    assert data["appointments"] and all("," in a["patient"] for a in data["appointments"])
    assert {a["status"] for a in data["appointments"]} <= {"booked", "at risk for stock"}
    assert len(data["nurse_load"]) == 10  # 08:00 to 18:00
    table = run(platform, "nurse", "board", "--date", day).stdout
    assert data["appointments"][0]["patient"] in table


def test_due_slots_book_and_cancel(platform: Platform) -> None:
    due = as_json(platform, "scheduling_coordinator", "due")
    unbooked = [d for d in due if not d["booked"]]
    assert unbooked and all(d["due"] <= d["window"][1] for d in due)
    assert unbooked[0]["patient"] in run(platform, "scheduling_coordinator", "due").stdout
    plan = unbooked[0]["plan"]
    found = as_json(platform, "scheduling_coordinator", "slots", plan)
    slot = found["slots"][0]
    made = as_json(platform, "scheduling_coordinator", *booking(plan, slot))
    assert made["status"] == "booked" and made["date"] == slot["date"]
    appointment = (
        platform.scheduler().GetAppointment(pb.GetAppointmentRequest(id=made["id"])).appointment
    )
    assert appointment.therapy_plan_id == plan
    # moved to the plan's next free slot elsewhere: the booking follows
    other = next(
        x for x in found["slots"] if (x["chair_id"], x["date"]) != (slot["chair_id"], slot["date"])
    )
    moved = as_json(
        platform,
        "scheduling_coordinator",
        "move",
        made["id"],
        "--chair",
        other["chair_id"],
        "--date",
        other["date"],
        "--start",
        other["start"],
        "--yes",
    )
    assert (moved["chair_id"], moved["date"], moved["start"]) == (
        other["chair_id"],
        other["date"],
        other["start"],
    )
    done = as_json(
        platform, "scheduling_coordinator", "cancel", made["id"], "--reason", "test", "--yes"
    )
    assert done["status"] == "cancelled"


def test_a_refused_booking_prints_the_rule_and_exits_non_zero(platform: Platform) -> None:
    due = as_json(platform, "scheduling_coordinator", "due")
    plan = next(d for d in due if not d["booked"])["plan"]
    slot = as_json(platform, "scheduling_coordinator", "slots", plan)["slots"][0]
    # a closed hour: the site opens 08:00, so 03:00 is outside its opening hours
    refused = run(platform, "scheduling_coordinator", *booking(plan, slot, "03:00"), code=1)
    # (the in-process servers' access log shares stderr here); Rich wraps long lines
    said = " ".join(refused.stderr.split())
    assert "error: FAILED_PRECONDITION: OPENING_HOURS:" in said, said  # the rule that refused
    # a nurse may not book at all: the permission is named
    denied = run(platform, "nurse", *booking(plan, slot), code=1)
    said = " ".join(denied.stderr.split())
    assert "PERMISSION_DENIED" in said and "scheduler.appointments.book" in said


def test_pharmacy_commands(platform: Platform) -> None:
    lots = as_json(platform, "pharmacist", "expiring", "--days", "3650")
    assert lots and lots == sorted(lots, key=lambda x: x["expiry"])
    assert as_json(platform, "pharmacist", "expiring", "--days", "0") != lots
    lines = as_json(platform, "pharmacist", "pick-list", "--date", platform.booked_day.isoformat())
    assert lines and all(x["vials"] > 0 and x["lot_number"] for x in lines)
    table = run(
        platform, "pharmacist", "pick-list", "--date", platform.booked_day.isoformat()
    ).stdout
    assert lines[0]["lot_number"] in table


def test_without_a_token_it_says_how_to_get_one() -> None:
    result = CliRunner().invoke(app, ["due"], env={"INFUSION_TOKEN": ""})
    assert result.exit_code == 2
    assert "make token" in result.stderr


GTIN = "05412345678908"  # a valid GTIN-14


def test_stock_receive_reorder_and_recall(platform: Platform) -> None:
    from infusion.inventory.v1 import inventory_pb2 as inv
    from infusion.inventory.v1 import inventory_pb2_grpc
    from services.common.auth.tokens import StaticToken
    from services.common.channels import open_channel

    def inventory(role: str) -> inventory_pb2_grpc.InventoryServiceStub:
        token = StaticToken(platform.issuer.issuer.role_token(role, centre.ORG))
        return inventory_pb2_grpc.InventoryServiceStub(
            open_channel(platform.inventory_address, None, token)
        )

    inventory("administrator").CreateProduct(
        inv.CreateProductRequest(
            request_id="cli-test-scan-product",
            product=inv.Product(
                code="cli-scan-ivig",
                brand="CLI IVIg",
                manufacturer="Lab",
                ig_class=inv.IG_CLASS_IVIG,
                concentration_percent="10",
                routes=[inv.ROUTE_IV],
                presentations=[inv.Presentation(grams="5", ml="50", gtin=GTIN)],
                storage=inv.StorageRule(kind=inv.STORAGE_KIND_REFRIGERATED),
            ),
        )
    )
    before = as_json(platform, "pharmacist", "stock")
    assert before and all(r["site_id"] == platform.site_id for r in before)
    assert "CLI IVIg" not in {r["product"] for r in before}
    scan = f"(01){GTIN}(17)280630(10)CLI-1"
    receipt = ["receive", scan, "--vials", "6", "--unit-cost", "99.5", "--request-id", "cli-r-1"]
    got = as_json(platform, "pharmacist", *receipt, "--yes")
    assert (got["product"], got["lot_number"], got["expiry"]) == ("CLI IVIg", "CLI-1", "2028-06-30")
    assert got["vials"] == 6 and got["on_hand_vials"] == 6
    again = as_json(platform, "pharmacist", *receipt, "--yes")  # the same request id: one receipt
    assert again["on_hand_vials"] == 6
    after = {r["product"]: r for r in as_json(platform, "pharmacist", "stock")}
    assert after["CLI IVIg"]["on_hand_vials"] == 6
    assert "CLI IVIg" in run(platform, "pharmacist", "stock").stdout
    # asked first: answering no receives nothing
    declined = CliRunner().invoke(
        app,
        ["receive", f"(01){GTIN}(17)280630(10)CLI-2", "--vials", "1", "--unit-cost", "1"],
        input="n\n",
        env={
            "INFUSION_TOKEN": platform.issuer.issuer.role_token("pharmacist", centre.ORG),
            "INVENTORY_ADDRESS": platform.inventory_address,
            "SCHEDULER_ADDRESS": platform.scheduler_address,
            "NOTIFY_ADDRESS": platform.notify_address,
        },
    )
    assert declined.exit_code == 1 and "CLI-2" in declined.stdout
    assert not inventory("pharmacist").ListLots(inv.ListLotsRequest(lot_number="CLI-2")).lots
    # an unreadable scan and a refused receipt: the reason, exit status 1
    bad = run(
        platform, "pharmacist", "receive", "hello", "--vials", "1", "--unit-cost", "1", code=1
    )
    assert "the scan could not be read" in " ".join(bad.stderr.split())
    refused = run(
        platform,
        "pharmacy_manager",
        "receive",
        scan,
        "--vials",
        "1",
        "--unit-cost",
        "1",
        "--yes",
        code=1,
    )
    said = " ".join(refused.stderr.split())
    assert "PERMISSION_DENIED" in said and "inventory.stock.receive" in said

    orders = as_json(platform, "pharmacy_manager", "reorder")
    assert orders["suggestions"] and orders["purchase_orders"] == []
    first = orders["suggestions"][0]
    assert first["vials"] > 0 and first["product"]
    assert first["product"] in run(platform, "pharmacy_manager", "reorder").stdout

    traced = as_json(
        platform, "pharmacist", "recall", "--product", got["product_id"], "--lot", "CLI-1"
    )
    assert [h["site_id"] for h in traced["sites"]] == [platform.site_id]
    assert traced["sites"][0]["on_hand_vials"] == 6 and traced["recipients"] == []
    table = run(platform, "pharmacist", "recall", "--product", got["product_id"], "--lot", "CLI-1")
    assert "0 recipients" in table.stdout


HEADER = (
    "mrn,family_name,given_name,birth_date,sex,weight_kg,height_cm,measured_on,product,"
    "dose_g_per_kg,interval_days,start_date,induction_days\n"
)


def test_import_patients_checks_the_file_then_enrols_each_row_once(
    platform: Platform, tmp_path: Any
) -> None:
    """Two good rows, then the same file again (nothing twice), then a row the scheduler
    refuses (3 g/kg on one day, above the 2.0 g/kg a day limit) next to a good one; a file
    with a mistake (a date that is not one) imports nothing."""

    def patients() -> int:
        listed = platform.scheduler("prescriber").ListPatients(
            pb.ListPatientsRequest(organisation_id=centre.ORG, page_size=500)
        )
        return len(listed.patients)

    good = tmp_path / "good.csv"
    good.write_text(
        HEADER
        + "IMP-1,Import,Ann,1970-01-02,F,70,165,2026-11-20,gammagard-liquid,1,28,2026-12-01,0\n"
        + "IMP-2,Import,Bo,1980-03-04,m,82.5,180,2026-11-20,privigen,2,28,2026-12-02,5\n"
    )
    before = patients()
    done = as_json(platform, "prescriber", "import-patients", str(good), "--yes")
    assert [(o["line"], o["state"]) for o in done] == [(2, "imported"), (3, "imported")]
    assert patients() == before + 2
    plan = (
        platform.scheduler("prescriber")
        .GetTherapyPlan(pb.GetTherapyPlanRequest(id=done[1]["plan_id"]))
        .therapy_plan
    )
    assert (plan.maintenance_dose, plan.induction.days, plan.site_id) == ("2", 5, platform.site_id)
    again = as_json(platform, "prescriber", "import-patients", str(good), "--yes")
    assert [o["patient_id"] for o in again] == [o["patient_id"] for o in done]
    assert patients() == before + 2  # the same file twice: nothing twice
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(
        HEADER
        + "IMP-3,Import,Cy,1990-05-06,F,60,165,2026-11-20,gammagard-liquid,3,28,2026-12-01,\n"
        + "IMP-4,Import,Di,1991-05-06,F,60,160,2026-11-20,gammagard-liquid,1,21,2026-12-01,\n"
    )
    refused = run(platform, "prescriber", "import-patients", str(mixed), "--yes", code=1)
    table = " ".join(refused.stdout.split())
    assert "1 imported, 0 skipped, 1 refused" in table and "INVALID_ARGUMENT" in table
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + "IMP-5,Import,Ed,1990-13-40,F,60,160,2026-11-20,gammagard-liquid,1,28,2026-12-01,\n"
    )
    count = patients()
    said = run(platform, "prescriber", "import-patients", str(bad), "--yes", code=1)
    assert "line 2: birth_date: not a date (YYYY-MM-DD)" in " ".join(said.stderr.split())
    assert patients() == count  # nothing was sent
    # a nurse may not enrol: the import stops at the first row, naming the permission
    nurse = run(platform, "nurse", "import-patients", str(good), "--yes", code=1)
    said = " ".join(nurse.stderr.split())
    assert "PERMISSION_DENIED" in said and "scheduler.patients.write" in said


def test_plan_proposes_then_books_the_optimisers_schedule(platform: Platform) -> None:
    """`infusion plan`: the optimiser's proposals named by patient and chair, then booked with
    --commit (the same request id twice books once); the solver's progress goes to stderr,
    never into the JSON. Last in the module: it books the demo's due patients."""
    from tests.integration.console_support import TODAY

    window = ["plan", "--date", TODAY.isoformat(), "--days", "14", "--time-limit", "5"]
    proposed = as_json(platform, "scheduling_coordinator", *window)
    assert proposed["committed"] is False and proposed["proposals"]
    assert all("," in p["patient"] and p["chair"] for p in proposed["proposals"])
    assert not any(p["appointment_id"] for p in proposed["proposals"])
    dates = [(p["date"], p["start"]) for p in proposed["proposals"]]
    assert dates == sorted(dates)
    shown = run(platform, "scheduling_coordinator", *window).stdout
    assert proposed["proposals"][0]["patient"] in shown and "Proposed:" in " ".join(shown.split())
    # a nurse may not plan: the permission is named, exit status 1
    denied = run(platform, "nurse", *window, code=1)
    assert "PERMISSION_DENIED" in " ".join(denied.stderr.split())
    booked_args = [*window, "--commit", "--yes", "--request-id", "cli-plan-1"]
    booked = as_json(platform, "scheduling_coordinator", *booked_args)
    ids = {p["appointment_id"] for p in booked["proposals"]}
    assert booked["committed"] is True and ids and all(ids)
    again = as_json(platform, "scheduling_coordinator", *booked_args)
    assert {p["appointment_id"] for p in again["proposals"]} == ids
    for appointment_id in ids:
        got = platform.scheduler().GetAppointment(pb.GetAppointmentRequest(id=appointment_id))
        assert got.appointment.status == pb.APPOINTMENT_STATUS_BOOKED
