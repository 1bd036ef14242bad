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
