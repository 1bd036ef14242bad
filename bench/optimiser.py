"""Schedule optimiser benchmark (issue 4, Done when): greedy vs CP-SAT on the generated instance.

``python -m bench.optimiser [--seed 1] [--time-limit 30] [--workers 2]`` prints a Markdown table
and writes bench/results/optimiser.json. Copy the table into docs/optimiser.md with the machine
and date. Targets: >= 99 % in window, objective within 2 % of CP-SAT's bound, <= 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.schedule_instances import describe, generate
from services.scheduler.domain.capacity import ScheduleResult
from services.scheduler.domain.greedy import greedy
from services.scheduler.domain.optimiser import solve
from services.scheduler.domain.schedule_check import violations

RESULTS = Path(__file__).resolve().parent / "results" / "optimiser.json"


def _row(name: str, r: ScheduleResult, broken: int) -> dict[str, Any]:
    k = r.kpis
    gap = None
    if r.objective is not None and r.best_bound is not None and r.objective > 0:
        gap = (r.objective - r.best_bound) / r.objective
    return {
        "method": name,
        "status": r.status,
        "placed": k.placed,
        "in_window_share": round(k.in_window_share, 4),
        "mean_deviation_days": round(k.mean_deviation_days, 3),
        "total_deviation_days": k.total_deviation_days,
        "objective": r.objective,
        "best_bound": r.best_bound,
        "gap": None if gap is None else round(gap, 4),
        "peak_starts_per_slot": k.peak_starts_per_slot,
        "chair_utilisation": round(k.chair_utilisation, 4),
        "peak_concurrent_chairs": k.peak_concurrent_chairs,
        "preferred_chair_share": round(k.preferred_chair_share, 3),
        "preferred_start_share": round(k.preferred_start_share, 3),
        "seconds": round(r.solve_seconds, 2),
        "violations": broken,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    problem = generate(args.seed)
    base = greedy(problem)
    best = solve(problem, args.time_limit, args.seed, args.workers)
    rows = [
        _row("greedy earliest-fit", base, len(violations(problem, base.placements))),
        _row("CP-SAT", best, len(violations(problem, best.placements))),
    ]
    cols = [
        "method",
        "status",
        "placed",
        "in_window_share",
        "mean_deviation_days",
        "total_deviation_days",
        "objective",
        "best_bound",
        "gap",
        "peak_starts_per_slot",
        "chair_utilisation",
        "seconds",
        "violations",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    out = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "seed": args.seed,
        "time_limit_s": args.time_limit,
        "workers": args.workers,
        "instance": describe(problem),
        "results": rows,
        "cp_sat_phases": [asdict(p) for p in best.phases],
        "cp_sat_notes": list(best.notes),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nwritten {RESULTS.relative_to(RESULTS.parents[2])}")


if __name__ == "__main__":
    main()
