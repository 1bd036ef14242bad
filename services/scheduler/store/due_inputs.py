"""A plan version's due-rule inputs, stored beside its specification
(``therapy_plan_versions.due_inputs``, migration 0013).

The due scan (services/scheduler/jobs.py) reads every active plan on its first pass. Reading
the due fields out of each stored specification made PostgreSQL parse 100,000 JSON documents
and this process decode the lists in them, row by row; a short canonical string written once,
when the version is written, is read as it is. Plans whose strings are equal (and that share a
site and have no history) have the same due dates, so the scan compares the strings and
decodes one per distinct value.

The string is derived from the specification alone (``encode``), by the column's default
(store/models.py), so every insert of a version, ORM or Core, writes it; versions are never
updated. ``decode`` gives back what ``due_spec`` and ``plan_history`` (usecases/records.py)
take from the whole plan.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from functools import lru_cache
from typing import Any

from services.scheduler.domain.due import Administration, CourseKind, DueSpec

# The specification's fields the due rule reads (store/codec.py's names), besides the plan's
# identity; ``induction_days`` is the induction's ``days``.
FIELDS = (
    "product_id",
    "start_date",
    "interval_days",
    "window_days_early",
    "window_days_late",
    "induction_days",
    "keep_cadence",
    "last_infusion_date",
    "ramp_up",
    "infusion_days",
    "regimen_start_date",
)


def encode(spec: dict[str, Any]) -> str:
    """The due inputs of a stored specification, as compact JSON with sorted keys (equal
    inputs, equal strings). Fields an older specification lacks are stored as its reader
    took them: absent (null)."""
    induction = spec.get("induction")
    fields = {name: spec.get(name) for name in FIELDS if name != "induction_days"}
    fields["induction_days"] = induction.get("days") if induction else None
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=4096)
def decode(inputs: str) -> tuple[DueSpec, tuple[Administration, ...]]:
    """The due rule's inputs from a stored string: a spec with no identity (the caller names
    the plan, ``dataclasses.replace``) and the dose given before the plan was entered, if any.
    Cached: the strings repeat across plans, and both results are immutable."""
    f = json.loads(inputs)
    last = f["last_infusion_date"]
    history = (
        ()
        if last is None
        else (Administration(dt.date.fromisoformat(last), CourseKind.MAINTENANCE),)
    )
    spec = DueSpec(
        plan_id="",
        plan_version=0,
        patient_id="",
        product_id=f["product_id"],
        start_date=dt.date.fromisoformat(f["start_date"]),
        interval_days=int(f["interval_days"]),
        window_days_early=int(f["window_days_early"]),
        window_days_late=int(f["window_days_late"]),
        induction_days=int(f["induction_days"] or 0),
        keep_cadence=bool(f["keep_cadence"]),
        ramp=tuple((int(day), Decimal(str(grams))) for day, grams in f["ramp_up"] or ()),
        infusion_days=tuple(int(d) for d in f["infusion_days"] or ()),
        history_from=(
            dt.date.fromisoformat(f["regimen_start_date"]) if f["regimen_start_date"] else None
        ),
    )
    return spec, history
