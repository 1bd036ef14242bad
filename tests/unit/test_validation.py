"""The request contract (services.common.validation): what the protos declare, the defaults for
what they do not, and that every field of every request falls under one or the other."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from google.type.timeofday_pb2 import TimeOfDay
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import String

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.notify.v1 import notify_pb2 as npb
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common import validation
from services.common.errors import InvalidArgument, brief
from services.common.idempotency import MAX_REQUEST_ID
from services.common.validation import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_ITEMS,
    RequestValidator,
    field_rules,
    max_items,
    string_limits,
)
from services.inventory.store import models as inventory_rows
from services.scheduler.store import models as scheduler_rows

VALIDATOR = RequestValidator()
MODULES = (pb, inv, npb)


def found(request: Any) -> dict[str, str]:
    return {v.field: v.rule for v in VALIDATOR.violations(request).kept}


# --- every field is covered ----------------------------------------------------------------------


def request_fields() -> Iterator[tuple[str, FieldDescriptor]]:
    """(message.field, descriptor) of every field any request can carry, nested included."""
    seen: set[str] = set()
    stack: list[Descriptor] = [
        m.input_type for module in MODULES for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    ]  # fmt: skip
    while stack:
        message = stack.pop()
        if message.full_name in seen or message.full_name.startswith("google."):
            continue
        seen.add(message.full_name)
        for fd in message.fields:
            yield f"{message.name}.{fd.name}", fd
            if fd.message_type is not None:
                stack.append(fd.message_type)


FIELDS = dict(request_fields())
ID_NAME = re.compile(r"(^|_)ids?$")
DECIMAL_NAME = re.compile(r"(grams|_kg|_cm|percent|^ml$|^rate$|^factor$|_dose|_g_per_kg|_kg_h)$")
# Display figures in notify payloads: formatted by our own services, shown as text, never parsed.
DISPLAY_ONLY = {"ReorderDuePayload", "LowStockPayload", "StockAtRiskPayload", "RecalledRecipient"}


def _string_rules(fd: FieldDescriptor) -> Any:
    rules = field_rules(fd)
    if rules is None:
        return None
    if fd.is_repeated:
        return rules.repeated.items.string if rules.repeated.HasField("items") else None
    return rules.string if rules.HasField("string") else None


def effective_max_chars(fd: FieldDescriptor) -> int:
    rules = _string_rules(fd)
    bounded, _ = string_limits(rules)
    return int(rules.max_len) if bounded else DEFAULT_MAX_CHARS


def test_every_string_repeated_and_bytes_field_has_a_rule_or_a_documented_default() -> None:
    """A field is covered when its declared rules bound both its length and its characters, or
    when the validator's defaults check it (every repeated field has its count checked)."""
    assert len(FIELDS) > 300
    uncovered = []
    for name, fd in FIELDS.items():
        if not (
            fd.is_repeated or fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
        ):
            continue
        declared = not fd.is_repeated and string_limits(_string_rules(fd)) == (True, True)
        if not declared and fd.number not in VALIDATOR._plan(fd.containing_type):
            uncovered.append(name)
        if fd.is_repeated:
            assert 0 < max_items(fd) <= 20_000, name
    assert not uncovered
    api = Path("docs/api.md").read_text(encoding="utf-8")  # the defaults are the documented ones
    assert f"{DEFAULT_MAX_CHARS} characters" in api and f"{DEFAULT_MAX_ITEMS} items" in api


def test_ids_and_decimals_declare_their_shape_instead_of_taking_the_default() -> None:
    undeclared = []
    for name, fd in FIELDS.items():
        if fd.type != FieldDescriptor.TYPE_STRING or name.split(".")[0] in DISPLAY_ONLY:
            continue
        field = name.split(".")[1]
        if ID_NAME.search(field) or DECIMAL_NAME.search(field):
            rules = _string_rules(fd)
            if rules is None or not rules.HasField("pattern") or not rules.HasField("max_len"):
                undeclared.append(name)
    assert not undeclared, f"declare a rule (see docs/api.md) for {undeclared}"


# proto field → the column it is stored in: the contract is never longer than the column
STORED = {
    "Site.organisation_id": scheduler_rows.SiteRow.organisation_id,
    "Site.display_name": scheduler_rows.SiteRow.display_name,
    "Site.time_zone": scheduler_rows.SiteRow.time_zone,
    "Chair.display_name": scheduler_rows.ChairRow.display_name,
    "Patient.organisation_id": scheduler_rows.PatientRow.organisation_id,
    "Patient.mrn": scheduler_rows.PatientRow.mrn,
    "Patient.given_name": scheduler_rows.PatientRow.given_name,
    "Patient.family_name": scheduler_rows.PatientRow.family_name,
    "Patient.notify_subscriber_id": scheduler_rows.PatientRow.notify_subscriber_id,
    "UpdateTherapyPlanRequest.reason": scheduler_rows.PlanVersionRow.reason,
    "ChairBlock.reason": scheduler_rows.ChairBlockRow.reason,
    "CancelAppointmentRequest.reason": scheduler_rows.AppointmentRow.cancel_reason,
    "TherapyPlan.product_id": scheduler_rows.AppointmentRow.product_id,
    "Product.id": inventory_rows.ProductRow.id,
    "Product.code": inventory_rows.ProductRow.code,
    "Product.brand": inventory_rows.ProductRow.brand,
    "Product.manufacturer": inventory_rows.ProductRow.manufacturer,
    "ReceiveStockRequest.site_id": inventory_rows.LotRow.site_id,
    "ReceiveStockRequest.lot_number": inventory_rows.LotRow.lot_number,
    "ReceiveStockRequest.supplier": inventory_rows.LotRow.supplier,
    "ReceiveStockRequest.purchase_order_id": inventory_rows.LotRow.purchase_order_id,
    "ReceiveStockRequest.storage_unit_id": inventory_rows.LotRow.storage_unit_id,
    "ReceiveStockRequest.actor": inventory_rows.MovementRow.actor,
    "ReceiveStockRequest.request_id": inventory_rows.MovementRow.request_id,
    "Presentation.gtin": inventory_rows.LotRow.gtin,
    "RecordWasteRequest.note": inventory_rows.MovementRow.note,
    "QuarantineLotRequest.reason": inventory_rows.MovementRow.note,
    "StockSite.id": inventory_rows.StockSiteRow.id,
    "StockSite.display_name": inventory_rows.StockSiteRow.display_name,
    "StockSite.time_zone": inventory_rows.StockSiteRow.time_zone,
    "StorageUnit.display_name": inventory_rows.StorageUnitRow.display_name,
    "ReserveStockRequest.appointment_id": inventory_rows.ReservationRow.appointment_id,
    "ReserveStockRequest.patient_id": inventory_rows.ReservationRow.patient_id,
    "ReserveStockRequest.product_id": inventory_rows.ReservationRow.product_id,
    "ReserveStockRequest.rounding_band_percent": (
        inventory_rows.ReservationRow.rounding_band_percent
    ),
    "ReleaseReservationRequest.reason": inventory_rows.ReservationRow.at_risk_reason,
    "DispenseReservationRequest.grams_administered": (
        inventory_rows.AdministrationRow.grams_administered
    ),
    "PurchaseOrder.supplier": inventory_rows.PurchaseOrderRow.supplier,
    "PurchaseOrder.reference": inventory_rows.MovementRow.reference,
    "PurchaseOrder.cancel_reason": inventory_rows.PurchaseOrderRow.cancel_reason,
    "ReorderPolicy.safety_stock_grams": inventory_rows.ReorderPolicyRow.safety_stock_grams,
}


@pytest.mark.parametrize("name", sorted(STORED))
def test_the_contract_fits_the_column(name: str) -> None:
    column_type = STORED[name].property.columns[0].type
    length = column_type.length if isinstance(column_type, String) else column_type.impl.length
    assert effective_max_chars(FIELDS[name]) <= length


def test_request_ids_fit_the_idempotency_key() -> None:
    assert all(
        effective_max_chars(fd) <= MAX_REQUEST_ID
        for name, fd in FIELDS.items()
        if name.endswith(".request_id")
    )


# --- the defaults --------------------------------------------------------------------------------


def test_undeclared_strings_are_bounded_and_free_of_control_characters() -> None:
    notes = npb.LowStockPayload(available_grams="x" * (DEFAULT_MAX_CHARS + 1))
    assert found(npb.PublishRequest(payload=npb.Payload(low_stock=notes))) == {
        "payload.low_stock.available_grams": "default.max_len"
    }
    assert found(pb.UpdateSiteRequest(update_mask={"paths": ["a\x00"]})) == {
        "update_mask.paths[0]": "default.single_line"
    }
    assert found(pb.CreateSiteRequest(site=pb.Site(display_name="Day\tunit"))) == {
        "site.display_name": "default.single_line"
    }
    assert not found(pb.CancelAppointmentRequest(reason="first line\nsecond\tline\r\n"))


def test_repeated_fields_enums_and_common_types() -> None:
    shifts = pb.SiteCapacity(nurse_shifts=[pb.NurseShift()] * 101)
    assert found(pb.CreateSiteRequest(site=pb.Site(capacity=shifts))) == {
        "site.capacity.nurse_shifts": "repeated.max_items"
    }
    assert found(inv.ListProductsRequest(ig_class=7)) == {"ig_class": "enum.defined_only"}  # type: ignore[arg-type]
    for date, ok in [
        (Date(), True),
        (Date(year=1900, month=1, day=1), True),
        (Date(year=2200, month=12, day=31), True),
        (Date(year=1899, month=12, day=31), False),
        (Date(year=2201, month=1, day=1), False),
        (Date(year=2026, month=2, day=29), False),
        (Date(year=0, month=5, day=1), False),
    ]:
        assert bool(found(pb.GetChairBoardRequest(local_date=date))) is not ok, date
    for stamp, ok in [
        (Timestamp(seconds=-2208988800), True),
        (Timestamp(seconds=7258118399, nanos=999_999_999), True),
        (Timestamp(seconds=7258118400), False),
        (Timestamp(seconds=0, nanos=-1), False),
        (Timestamp(seconds=0, nanos=1_000_000_000), False),
    ]:
        assert bool(found(pb.StartInfusionRequest(actual_start_time=stamp))) is not ok, stamp
    for time, ok in [(TimeOfDay(hours=24), True), (TimeOfDay(hours=24, minutes=1), False),
                     (TimeOfDay(minutes=60), False), (TimeOfDay(hours=-1), False)]:  # fmt: skip
        assert bool(found(pb.BookAppointmentRequest(local_start=time))) is not ok, time
    money = [
        (Money(currency_code="GBP", units=34, nanos=500_000_000), {}),
        (Money(currency_code="gbp", units=1), {"unit_cost.currency_code": "money.currency"}),
        (Money(currency_code="GBP", units=1, nanos=-1), {"unit_cost": "money.valid"}),
        (Money(currency_code="GBP", units=2**62), {"unit_cost": "money.valid"}),
    ]
    for value, expected in money:
        assert found(inv.ReceiveStockRequest(unit_cost=value)) == expected


def test_violations_past_twenty_are_counted_not_listed() -> None:
    request = inv.UpsertDemandForecastRequest(
        forecasts=[inv.DemandForecast(grams="x", site_id="\x00")] * 5_000
    )
    with pytest.raises(InvalidArgument) as refused:
        VALIDATOR.check(request)
    assert len(refused.value.violations) == 20
    assert refused.value.omitted == 9_980
    assert refused.value.message.endswith("; and 9980 more")


@given(
    st.lists(st.sampled_from(["1", "x", "2.5", "1e3", ""]), min_size=1, max_size=300),
    st.sampled_from(["r-1", "r 1"]),
)
def test_a_large_request_validated_node_by_node_reports_what_one_call_would(
    grams: list[str], request_id: str
) -> None:
    request = inv.UpsertDemandForecastRequest(
        request_id=request_id,
        forecasts=[
            inv.DemandForecast(site_id="site-1", grams=g, day=Date(year=2026, month=12, day=1))
            for g in grams
        ],
    )
    with patch.object(validation, "MAX_VIOLATIONS", 10**6):  # keep all, to compare them all
        split = validation.Found()
        with patch.object(validation, "VALIDATE_AT_ONCE_BYTES", 64):  # split nearly every node
            VALIDATOR._declared(request, "", split)
        whole = validation.Found()
        VALIDATOR._collect(request, "", whole)
    assert split.total == whole.total == len(whole.kept)
    assert sorted((v.field, v.rule) for v in split.kept) == sorted(
        (v.field, v.rule) for v in whole.kept
    )


def test_brief_cuts_long_input_with_an_ellipsis() -> None:
    assert brief("short") == "short"
    assert brief("x" * 3_000_000) == "x" * 63 + "…"
