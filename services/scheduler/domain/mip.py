"""A mixed-integer program, solved by SCIP through OR-Tools' ``pywraplp`` (the MIP solver that
ortools already ships; single-threaded, so a run depends only on its input and seed).

Why SCIP: on the schedule benchmark it proves the optimum at the root node in seconds and it
stops at its time limit; HiGHS as bundled with ortools 9.10 ignores ``SetTimeLimit``
(docs/optimiser.md). The limits that make a run repeatable are deterministic ones — a node
limit and a relative gap. The time limit is a safety net and counts the solve's CPU seconds,
not the wall clock, so other work on a shared machine slows the solve down but does not cut
it short; when the time limit is what stopped the solve, ``MipOutcome.clock_stopped`` says so
(the result may then differ on a faster or slower machine).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, cast

from ortools.linear_solver import pywraplp  # type: ignore[import-untyped]


class Var(Protocol):
    """A pywraplp variable, as far as this package uses one."""

    def index(self) -> int: ...

    def solution_value(self) -> float: ...

    def lb(self) -> float: ...

    def ub(self) -> float: ...

    def SetBounds(self, lb: float, ub: float) -> None: ...  # noqa: N802 - pywraplp's name


_STATUS = {
    pywraplp.Solver.OPTIMAL: "OPTIMAL",
    pywraplp.Solver.FEASIBLE: "FEASIBLE",
    pywraplp.Solver.INFEASIBLE: "INFEASIBLE",
    pywraplp.Solver.UNBOUNDED: "UNBOUNDED",
    pywraplp.Solver.ABNORMAL: "ABNORMAL",
    pywraplp.Solver.NOT_SOLVED: "NOT_SOLVED",
}


@dataclass(frozen=True)
class MipLimits:
    seconds: float  # wall-clock safety net
    nodes: int  # branch-and-bound nodes (deterministic)
    gap: float = 0.0  # stop once (objective − bound) / objective is at most this
    seed: int = 0


@dataclass(frozen=True)
class MipOutcome:
    status: str  # OPTIMAL (within the gap), FEASIBLE (a limit stopped it), INFEASIBLE, ...
    objective: float | None
    bound: float | None
    seconds: float
    nodes: int
    clock_stopped: bool  # the wall clock, not a deterministic limit, ended the solve

    @property
    def found(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")


class Mip:
    """Variables, rows and a minimised objective; coefficients are collected here and handed
    to the solver once, which is much faster than pywraplp's per-coefficient calls."""

    def __init__(self) -> None:
        solver = pywraplp.Solver.CreateSolver("SCIP")
        if solver is None:  # pragma: no cover - ortools wheels ship SCIP
            raise RuntimeError("OR-Tools was built without SCIP")
        self.solver = solver
        self._costs: dict[int, float] = {}
        self._vars: list[Var] = []
        self._offset = 0.0
        self._objective_set = False

    def var(self, lb: float, ub: float, integer: bool = True) -> Var:
        v = cast(Var, self.solver.Var(lb, ub, integer, ""))
        self._vars.append(v)
        return v

    def row(self, lb: float, ub: float, terms: Iterable[tuple[Var, float]]) -> None:
        ct = self.solver.Constraint(lb, ub)
        for v, coef in terms:
            ct.SetCoefficient(v, ct.GetCoefficient(v) + coef)

    def cost(self, v: Var, coef: float) -> None:
        if coef:
            self._costs[v.index()] = self._costs.get(v.index(), 0.0) + coef

    def add_offset(self, value: float) -> None:
        self._offset += value

    def hint(self, values: dict[Var, float]) -> None:
        pairs = sorted(values.items(), key=lambda kv: kv[0].index())
        self.solver.SetHint([v for v, _ in pairs], [x for _, x in pairs])

    def solve(self, limits: MipLimits) -> MipOutcome:
        objective = self.solver.Objective()
        if not self._objective_set:  # once: a model may be solved again with other bounds
            for index, coef in self._costs.items():
                objective.SetCoefficient(self._vars[index], coef)
            objective.SetOffset(self._offset)
            objective.SetMinimization()
            self._objective_set = True
        self.solver.SetTimeLimit(max(1, int(limits.seconds * 1000)))
        accepted = self.solver.SetSolverSpecificParametersAsString(
            "timing/clocktype = 1\n"  # the time limit counts this solve's CPU seconds
            f"limits/gap = {limits.gap}\n"
            f"limits/nodes = {limits.nodes}\n"
            f"randomization/randomseedshift = {limits.seed % 2**20}\n"
        )
        if not accepted:  # pragma: no cover - the names are SCIP 8's
            raise RuntimeError("SCIP refused the solver parameters")
        began, cpu = time.perf_counter(), time.process_time()
        code = self.solver.Solve()
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - cpu
        status = _STATUS.get(code, "NOT_SOLVED")
        found = status in ("OPTIMAL", "FEASIBLE")
        nodes = int(self.solver.nodes())
        return MipOutcome(
            status=status,
            objective=objective.Value() if found else None,
            bound=objective.BestBound() if found else None,
            seconds=seconds,
            nodes=nodes,
            clock_stopped=status in ("FEASIBLE", "NOT_SOLVED")
            and cpu_seconds >= 0.9 * limits.seconds,
        )

    @staticmethod
    def value(v: Var) -> float:
        return float(v.solution_value())

    def values(self) -> list[float]:
        """The last solution, every variable in creation order (``Var.index()``)."""
        return [float(v.solution_value()) for v in self._vars]

    def variables(self) -> list[Var]:
        return list(self._vars)
