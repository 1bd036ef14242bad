"""The patient import's file check (services/console/importing.py): every mistake named by
line and column, nothing accepted from a line with one, and request ids that follow a row's
content (the same row, the same id; a changed row, another; never the MRN itself)."""

from __future__ import annotations

import datetime as dt

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.console.importing import check

HEADER = (
    "mrn,family_name,given_name,birth_date,sex,weight_kg,height_cm,measured_on,product,"
    "dose_g_per_kg,interval_days,start_date\n"
)
GOOD = "M-1,Doe,Jo,1970-01-02,F,70,165,2026-11-20,privigen,1,28,2026-12-01\n"


def test_a_good_row_is_read_whole() -> None:
    (row,) = check(HEADER + GOOD).rows
    assert (row.line, row.mrn, row.birth_date, row.sex) == (
        2,
        "M-1",
        dt.date(1970, 1, 2),
        pb.SEX_AT_BIRTH_FEMALE,
    )
    assert (row.dose_g_per_kg, row.interval_days, row.indication) == ("1", 28, pb.INDICATION_MMN)


def test_every_mistake_is_named_by_line_and_column() -> None:
    bad = "M-2,,Jo,1970-02-30,X,-1,165,2026-11-20,,1,2.5,2026-12-01\n"
    found = check(HEADER + GOOD + bad)
    assert [r.mrn for r in found.rows] == ["M-1"]
    assert found.mistakes == [
        "line 3: family_name: required",
        "line 3: birth_date: not a date (YYYY-MM-DD)",
        "line 3: sex: one of f, female, m, male",
        "line 3: weight_kg: a number above 0",
        "line 3: product: required",
        "line 3: interval_days: a whole number",
    ]


def test_missing_columns_are_named() -> None:
    found = check("mrn,family_name\nM-1,Doe\n")
    assert found.rows == [] and found.mistakes[0].startswith("line 1: missing columns: given_name")


def test_request_ids_follow_the_rows_content_not_its_mrn() -> None:
    (row,) = check(HEADER + GOOD).rows
    (same,) = check(HEADER + GOOD).rows
    (moved,) = check(HEADER + GOOD.replace(",28,", ",21,")).rows
    assert row.key("plan", "org") == same.key("plan", "org")
    assert row.key("plan", "org") != moved.key("plan", "org")  # the plan changed
    assert row.key("patient", "org") == moved.key("patient", "org")  # the patient did not
    assert row.key("patient", "org") != row.key("patient", "other-org")
    assert "M-1" not in row.key("patient", "org") and "Doe" not in row.key("patient", "org")
