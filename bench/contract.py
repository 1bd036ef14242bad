"""The request contract's cost per call (`python -m bench.contract`, and part of `make bench`):
the validating interceptor's wrapper around a handler that does nothing, called directly with
the bench's own CalculateDose and ReserveStock requests, against the same handler unwrapped.
The difference is what every call of those RPCs pays for the contract, without the noise of a
loaded server (the served runs in bench/run.py show it within the whole call)."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from typing import Any

import grpc
from google.type.date_pb2 import Date

from bench.inventory import reserve_request
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.validation_interceptor import ValidationInterceptor

CALLS = 20_000
ROUNDS = 5


def _handler(request: Any, context: Any) -> Any:
    return request


def _per_call_us(call: Any, request: Any) -> float:
    """CPU time of this process per call (less disturbed than wall time by other load on the
    machine), the median of ROUNDS rounds."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(CALLS):
            call(request, None)
        rounds.append((time.process_time() - started) / CALLS * 1e6)
    return statistics.median(rounds)


def requests() -> dict[str, Any]:
    dose = pb.CalculateDoseRequest(
        therapy_plan_id="01938c6e-7f2a-7c3e-9a41-2b5d8e9f0a1c",
        dosing_date=Date(year=2026, month=12, day=1),
    )
    reserve = reserve_request("gammagard-liquid", dt.date(2026, 12, 1), "01938c6e-appointment")
    return {"CalculateDose": dose, "ReserveStock": reserve}


def run() -> dict[str, dict[str, float]]:
    wrapped = (
        ValidationInterceptor()
        ._wrap("/bench", grpc.unary_unary_rpc_method_handler(_handler))
        .unary_unary
    )
    results = {}
    for name, request in requests().items():
        bare = _per_call_us(_handler, request)
        checked = _per_call_us(wrapped, request)
        results[name] = {"bare_us": bare, "checked_us": checked, "cost_us": checked - bare}
    return results


def main() -> None:
    print("| request | contract check per call (µs) |")
    print("| --- | ---: |")
    for name, r in run().items():
        print(f"| {name} | {r['cost_us']:.1f} |")


if __name__ == "__main__":
    main()
