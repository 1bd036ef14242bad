"""An independent validator of a proposed schedule.

Written from the rules in ``capacity``'s docstring, minute by minute and pair by pair, without
the optimiser's model or the greedy's bookkeeping, so that a bug in either shows up here.
Fixed bookings count everywhere, but a rule is reported only when a placement takes part in
breaking it (a conflict among fixed bookings alone is the input's, not the schedule's).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from services.scheduler.domain.capacity import (
    START_LIMIT_SLOT_MINUTES,
    DayCapacity,
    Placement,
    ScheduleProblem,
)


def _nurses_at(day: DayCapacity, minute: int) -> int:
    return sum(n for start, end, n in day.nurse_shifts if start <= minute < end)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def violations(problem: ScheduleProblem, placements: Sequence[Placement]) -> list[str]:
    """Every hard constraint the placements break, as sentences; [] when the schedule holds."""
    out: list[str] = []
    rules = problem.rules
    days = {d.day: d for d in problem.days}
    day_index = {d.day: i for i, d in enumerate(problem.days)}
    requests = {r.id: r for r in problem.requests}

    seen: set[str] = set()
    good: list[Placement] = []  # placements whose request, day and chair are known
    for p in placements:
        where = f"{p.request_id} on {p.day} {p.chair_id} {_hhmm(p.start_minute)}"
        if p.request_id in seen:
            out.append(f"{p.request_id}: placed more than once")
            continue
        seen.add(p.request_id)
        req = requests.get(p.request_id)
        if req is None:
            out.append(f"{p.request_id}: no such request")
            continue
        cap = days.get(p.day)
        if cap is None:
            out.append(f"{where}: {p.day} is not an open day of the horizon")
            continue
        if p.chair_id not in cap.chairs:
            out.append(f"{where}: chair {p.chair_id} is not usable on {p.day}")
            continue
        if p.end_minute - p.start_minute != req.duration_minutes:
            out.append(
                f"{where}: lasts {p.end_minute - p.start_minute} min, "
                f"the request needs {req.duration_minutes}"
            )
        if p.start_minute % rules.granularity_minutes != 0:
            out.append(f"{where}: start is off the {rules.granularity_minutes}-minute grid")
        if p.start_minute < cap.open_minute:
            out.append(f"{where}: starts before opening {_hhmm(cap.open_minute)}")
        if p.end_minute > cap.close_minute:
            out.append(
                f"{where}: ends {_hhmm(p.end_minute)}, after closing {_hhmm(cap.close_minute)}"
            )
        if not req.earliest_day <= p.day <= req.latest_day:
            out.append(f"{where}: outside the window {req.earliest_day}..{req.latest_day}")
        good.append(p)

    # chairs: every pair of occupations on one chair-day, turnover included; and blocks
    occupations: dict[tuple[dt.date, str], list[tuple[int, int, str, bool]]] = defaultdict(list)
    for f in problem.fixed:
        occupations[(f.day, f.chair_id)].append(
            (f.start_minute, f.end_minute + rules.turnover_minutes, f.id, False)
        )
    for p in good:
        occupations[(p.day, p.chair_id)].append(
            (p.start_minute, p.end_minute + rules.turnover_minutes, p.request_id, True)
        )
    for (day, chair), items in sorted(occupations.items()):
        for i, (s1, e1, n1, placed1) in enumerate(items):
            for s2, e2, n2, placed2 in items[i + 1 :]:
                if (placed1 or placed2) and s1 < e2 and s2 < e1:
                    out.append(f"chair {chair} on {day}: {n1} and {n2} overlap (turnover included)")
            if placed1 and day in days:
                for b_chair, bs, be in days[day].chair_blocks:
                    if b_chair == chair and s1 < be and bs < e1:
                        out.append(
                            f"chair {chair} on {day}: {n1} meets the block {_hhmm(bs)}-{_hhmm(be)}"
                        )

    # nurses and starts, minute by minute
    running: dict[dt.date, list[tuple[int, int, bool]]] = defaultdict(list)
    for f in problem.fixed:
        running[f.day].append((f.start_minute, f.end_minute, False))
    for p in good:
        running[p.day].append((p.start_minute, p.end_minute, True))
    for day, runs in sorted(running.items()):
        cap = days.get(day)
        if cap is None or not cap.nurse_shifts:
            continue
        for minute in range(0, 24 * 60):
            here = [placed for s, e, placed in runs if s <= minute < e]
            if not any(here):
                continue
            allowed = _nurses_at(cap, minute) * rules.nurse_ratio
            if len(here) > allowed:
                out.append(
                    f"nurse ratio on {day} at {_hhmm(minute)}: {len(here)} running, "
                    f"{allowed} allowed"
                )
                break  # one sentence per day is enough
        quarters: dict[int, list[bool]] = defaultdict(list)
        for s, _e, placed in runs:
            quarters[s // START_LIMIT_SLOT_MINUTES].append(placed)
        for q, starts in sorted(quarters.items()):
            if not any(starts):
                continue
            first = q * START_LIMIT_SLOT_MINUTES
            minutes = [
                m
                for m in range(first, first + START_LIMIT_SLOT_MINUTES)
                if cap.open_minute <= m < cap.close_minute
            ] or [first]
            allowed = min(_nurses_at(cap, m) for m in minutes) * rules.start_limit
            if len(starts) > allowed:
                out.append(
                    f"start limit on {day} at {_hhmm(first)}: {len(starts)} starts, "
                    f"{allowed} allowed"
                )

    # one infusion per patient per day
    per_patient: dict[tuple[str, dt.date], list[tuple[str, bool]]] = defaultdict(list)
    for f in problem.fixed:
        per_patient[(f.patient_id, f.day)].append((f.id, False))
    for p in good:
        per_patient[(requests[p.request_id].patient_id, p.day)].append((p.request_id, True))
    for (patient, day), booked in sorted(per_patient.items()):
        if len(booked) > 1 and any(placed for _, placed in booked):
            names = ", ".join(n for n, _ in booked)
            out.append(f"patient {patient} has {len(booked)} infusions on {day}: {names}")

    # induction series: all or nothing, on consecutive open days in series order
    placed_at = {p.request_id: p for p in good}
    series: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in problem.requests:
        if r.series_id:
            series[r.series_id].append((r.series_index, r.id))
    for sid, members in sorted(series.items()):
        members.sort()
        got = [rid for _, rid in members if rid in placed_at]
        if not got:
            continue
        if len(got) != len(members):
            out.append(f"series {sid}: {len(got)} of {len(members)} placed (all or nothing)")
            continue
        for (_, a), (_, b) in zip(members, members[1:], strict=False):
            da, db = placed_at[a].day, placed_at[b].day
            if day_index.get(db, -99) != day_index.get(da, -99) + 1:
                out.append(f"series {sid}: {b} on {db} is not the open day after {a} on {da}")

    # stock (when given): a dose only on a day with an entry; on every entry day, the grams
    # placed that day and those placed earlier that did not come out of stock expiring in
    # between (soonest-expiring stock is drawn first) within the day's grams
    if problem.stock is not None:
        given: dict[str, dict[dt.date, list[Decimal]]] = defaultdict(dict)
        for ds in problem.stock:
            have = given[ds.product_id].setdefault(ds.day, [Decimal(0), Decimal(0)])
            have[0] += ds.grams
            have[1] += ds.expiring
        drawn: dict[str, list[tuple[dt.date, str, Decimal]]] = defaultdict(list)
        for p in good:
            req = requests[p.request_id]
            if req.grams > 0:
                drawn[req.product_id].append((p.day, p.request_id, req.grams))
                if p.day not in given.get(req.product_id, {}):
                    out.append(
                        f"stock of {req.product_id} on {p.day}: none known, {p.request_id} placed"
                    )
        for product, doses in sorted(drawn.items()):
            carried = Decimal(0)
            before = Decimal(0)
            for k, (day, (grams, expiring)) in enumerate(sorted(given[product].items())):
                if k:
                    carried = max(Decimal(0), carried + before - expiring)
                today = [(n, g) for d, n, g in sorted(doses) if d == day]
                before = sum((g for _, g in today), Decimal(0))
                if before + carried > grams:
                    names = f" ({', '.join(n for n, _ in today)})" if today else ""
                    out.append(
                        f"stock of {product} on {day}: {before.normalize():f} g placed that "
                        f"day{names} and {carried.normalize():f} g placed before, "
                        f"{grams.normalize():f} g available"
                    )
    return out
