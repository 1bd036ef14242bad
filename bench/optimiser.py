"""Schedule optimiser benchmark: the greedy baseline against the time-indexed MIP.

``python -m bench.optimiser [--part all|deviation|centre|nurse|small] [--repeats 3]`` (also
``python -m bench.run --only optimiser``, and part of ``make bench``) prints Markdown tables
and writes bench/results/optimiser.json; docs/benchmarks.md and docs/optimiser.md record them.

- deviation: the 30-chair, 20-day, 900-request instance (bench/schedule_instances.py, seed 1)
  with the deviation objective ``W·unplaced + Σ |day − due|``, repeated: objective, proven
  bound, gap, wall and CPU seconds, the load average, and whether every repeat gave the same
  schedule. Targets: proven optimal or ≤ 1 % gap within 30 s, better than the greedy's 329.
- centre: the same instance with the centre's objective (domain/objective.py defaults): every
  KPI for the greedy and the optimiser side by side, and the objective term by term.
- nurse: NURSE_LIMITED (a closure day, a fifth of the patients on induction courses, nurses
  short of demand) with the centre's objective and 60 s (the first horizon solve stops on its
  time limit, so the window search runs; its phases are in the JSON); next to it two bounds
  from the same model: the most infusions that can be placed at all, and the most induction
  series.
- small: 5 and 10 chairs × 10 open days, several seeds, the deviation objective: the greedy,
  the optimiser, and the independent formulation's proven optimum (the regression tests'
  check, bench/independent_schedule_model.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.independent_schedule_model import optimum
from bench.schedule_instances import NURSE_LIMITED, describe, generate, small
from services.scheduler.domain.capacity import ScheduleProblem, ScheduleResult
from services.scheduler.domain.day_grid import DayGrid
from services.scheduler.domain.greedy import greedy, series_groups
from services.scheduler.domain.horizon_model import HorizonModel
from services.scheduler.domain.mip import MipLimits
from services.scheduler.domain.objective import ScheduleObjective, terms
from services.scheduler.domain.optimiser import solve
from services.scheduler.domain.schedule_check import violations

RESULTS = Path(__file__).resolve().parent / "results" / "optimiser.json"
PLACEMENTS_ONLY = ScheduleObjective.only(placement=1)
KPI_COLUMNS = (
    "placed",
    "in_window_share",
    "series_dropped",
    "mean_lateness_days",
    "max_lateness_days",
    "on_due_day_share",
    "total_deviation_days",
    "usual_weekday_share",
    "usual_start_share",
    "usual_chair_share",
    "chair_utilisation",
    "daily_utilisation_spread",
    "peak_starts_per_slot",
    "mean_daily_peak_starts",
    "expected_overtime_minutes",
    "expected_overtime_worst_day",
)


def _fingerprint(result: ScheduleResult) -> str:
    text = ";".join(
        f"{p.request_id},{p.day},{p.chair_id},{p.start_minute}" for p in result.placements
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _timed(run: Callable[[], ScheduleResult]) -> tuple[ScheduleResult, float, float, float]:
    """(result, wall s, CPU s of this process, 1-minute load average before)."""
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu, load


def _objective(problem: ScheduleProblem, result: ScheduleResult) -> float:
    return sum(t.cost for t in terms(problem, result.placements))


def _row(name: str, problem: ScheduleProblem, r: ScheduleResult, **extra: Any) -> dict[str, Any]:
    k = r.kpis
    row: dict[str, Any] = {"method": name, "status": r.status}
    for col in KPI_COLUMNS:
        value = getattr(k, col)
        row[col] = round(value, 3) if isinstance(value, float) else value
    row["objective"] = round(_objective(problem, r), 2)
    row["best_bound"] = None if r.best_bound is None else round(r.best_bound, 2)
    row["gap"] = None if r.gap is None else round(r.gap, 4)
    row["nodes"] = sum(p.nodes for p in r.phases)
    row["violations"] = len(violations(problem, r.placements))
    row.update(extra)
    return row


def deviation(repeats: int, limit: float) -> dict[str, Any]:
    problem = dataclasses.replace(generate(1), objective=ScheduleObjective.deviation_only())
    base, wall, cpu, load = _timed(lambda: greedy(problem))
    rows = [_row("greedy", problem, base, wall_s=round(wall, 1), cpu_s=round(cpu, 1), load=load)]
    prints = set()
    for k in range(repeats):
        r, wall, cpu, load = _timed(lambda: solve(problem, limit, 1))
        prints.add(_fingerprint(r))
        rows.append(
            _row(
                f"MIP, run {k + 1}",
                problem,
                r,
                wall_s=round(wall, 1),
                cpu_s=round(cpu, 1),
                load=load,
                notes=list(r.notes),
                phases=[dataclasses.asdict(p) for p in r.phases],
            )
        )
    return {
        "instance": describe(problem),
        "time_limit_s": limit,
        "rows": rows,
        "same_schedule_every_run": len(prints) == 1,
    }


def centre(limit: float) -> dict[str, Any]:
    problem = generate(1)
    base, bwall, bcpu, bload = _timed(lambda: greedy(problem))
    best, wall, cpu, load = _timed(lambda: solve(problem, limit, 1))
    return {
        "rows": [
            _row("greedy", problem, base, wall_s=round(bwall, 1), cpu_s=round(bcpu, 1)),
            _row("MIP", problem, best, wall_s=round(wall, 1), cpu_s=round(cpu, 1), load=load),
        ],
        "terms": {
            "greedy": [dataclasses.asdict(t) for t in terms(problem, base.placements)],
            "MIP": [dataclasses.asdict(t) for t in best.terms],
        },
        "notes": list(best.notes),
        "phases": [dataclasses.asdict(p) for p in best.phases],
    }


def _bound(problem: ScheduleProblem, objective: ScheduleObjective, limit: float) -> float | None:
    """The horizon model's proven lower bound under ``objective`` (a relaxation of the whole
    problem, so also a bound of it)."""
    p = dataclasses.replace(problem, objective=objective)
    grids = [DayGrid(p, i) for i in range(len(p.days))]
    model = HorizonModel(p, grids, frozenset())
    model.hint(greedy(p).placements, grids)
    return model.solve(MipLimits(limit, 10**6, 1e-4)).bound


def nurse(limit: float) -> dict[str, Any]:
    problem = generate(1, NURSE_LIMITED)
    base, bwall, bcpu, _ = _timed(lambda: greedy(problem))
    best, wall, cpu, load = _timed(lambda: solve(problem, limit, 1))
    n = len(problem.requests)
    groups = series_groups(problem.requests)
    members = sum(len(g) for g in groups.values())
    placed_bound = _bound(problem, PLACEMENTS_ONLY, limit)
    # series first: each member worth more than every other request together
    series_first = dataclasses.replace(PLACEMENTS_ONLY, induction_extra=n + 1)
    series_bound = _bound(problem, series_first, limit)
    most_placed = None if placed_bound is None else n - math.ceil(placed_bound - 1e-6)
    least_series_members_out = (
        None
        if series_bound is None
        else max(0, math.ceil((series_bound - (n - members) - 1e-6) / (n + 2)))
    )
    return {
        "instance": describe(problem),
        "time_limit_s": limit,
        "rows": [
            _row("greedy", problem, base, wall_s=round(bwall, 1), cpu_s=round(bcpu, 1)),
            _row(
                "MIP",
                problem,
                best,
                wall_s=round(wall, 1),
                cpu_s=round(cpu, 1),
                load=load,
                notes=list(best.notes),
                phases=[dataclasses.asdict(p) for p in best.phases],
            ),
        ],
        "series": len(groups),
        "most_placed_proven": most_placed,
        "placed_within_of_most": None
        if not most_placed
        else round(1 - best.kpis.placed / most_placed, 4),
        "series_members_that_must_go": least_series_members_out,
        "series_members_dropped": sum(
            len(groups[s])
            for s in groups
            if not any(p.request_id == groups[s][0].id for p in best.placements)
        ),
    }


def small_instances(limit: float) -> dict[str, Any]:
    rows = []
    for chairs in (5, 10):
        for seed in (1, 2, 3):
            nurses = (1, 0, 1) if chairs == 5 else (6, 1, 1)
            problem = dataclasses.replace(
                generate(seed, small(chairs, nurses)),
                objective=ScheduleObjective.deviation_only(),
            )
            base = greedy(problem)
            best, wall, cpu, _ = _timed(partial(solve, problem, limit, seed))
            independent = optimum(problem)
            rows.append(
                {
                    "instance": f"{chairs} chairs × 10 days, seed {seed}",
                    "requests": len(problem.requests),
                    "greedy": f"{_objective(problem, base):.0f} ({base.kpis.unplaced} unplaced)",
                    "MIP": f"{best.objective:.0f} ({best.kpis.unplaced} unplaced)",
                    "MIP bound": best.best_bound,
                    "status": best.status,
                    "independent optimum": independent[1],
                    "wall_s": round(wall, 1),
                    "cpu_s": round(cpu, 1),
                }
            )
    return {"rows": rows}


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def run(parts: tuple[str, ...], repeats: int, limit: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }
    if "deviation" in parts:
        out["deviation"] = d = deviation(repeats, limit)
        print("\n## Deviation objective, 30 chairs × 20 days × 900 requests\n")
        cols = ["method", "status", "placed", "total_deviation_days", "objective", "best_bound"]
        print(_table(d["rows"], [*cols, "gap", "nodes", "wall_s", "cpu_s", "load", "violations"]))
        print(f"\nsame schedule on every run: {d['same_schedule_every_run']}")
    if "centre" in parts:
        out["centre"] = c = centre(limit)
        print("\n## The centre's objective, same instance: KPIs\n")
        print(_table(c["rows"], ["method", *KPI_COLUMNS, "objective", "best_bound", "wall_s"]))
    if "nurse" in parts:
        out["nurse"] = n = nurse(2 * limit)
        print("\n## Nurse-limited month (NURSE_LIMITED)\n")
        cols = ["method", "status", "placed", "series_dropped", "objective", "best_bound"]
        print(_table(n["rows"], [*cols, "gap", "wall_s", "cpu_s", "load"]))
        keys = ("most_placed_proven", "placed_within_of_most", "series_members_that_must_go")
        print({k: n[k] for k in (*keys, "series_members_dropped")})
        for note in n["rows"][1]["notes"]:
            print(f"- {note}")
    if "small" in parts:
        out["small"] = s = small_instances(limit)
        print("\n## Small instances, deviation objective\n")
        print(_table(s["rows"], list(s["rows"][0])))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nwritten {RESULTS.relative_to(RESULTS.parents[2])}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    choices = ("deviation", "centre", "nurse", "small")
    parser.add_argument("--part", choices=("all", *choices), default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=30.0)
    args = parser.parse_args()
    parts = choices if args.part == "all" else (args.part,)
    run(parts, args.repeats, args.time_limit)


if __name__ == "__main__":
    main()
