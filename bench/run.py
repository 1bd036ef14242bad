"""`make bench`: throughput and p50/p99 latency from a separate load process, next to a bare
grpcio echo server measured in the same run: CalculateDose and ListProducts (services as
processes on SQLite in a temporary directory, as under `make run`), and the inventory's
ReserveStock and GetStockForecast on PostgreSQL (bench/inventory.py). Results: printed as a
Markdown table and written to bench/results/latest.json; copy the table into
docs/benchmarks.md with the machine and date.

`python -m bench.run --only inventory` (or `--only scheduler`, `--only booking`, `--only e2e`,
`--only contract`, `--only tracing`, `--only auth`, `--only audit`) runs one part after the
echo;
`--only board` the console's chair board page (bench/console_board.py: p95 of GET /board for
a 30-chair day with 90 appointments, the console and the services as processes);
`--only optimiser` runs bench/optimiser.py's schedule benchmarks alone (no services, no echo;
the full run ends with them); bench/booking.py measures BookAppointment and FindSlots on
PostgreSQL, bench/e2e_booking.py bookings reserved end to end through the outbox,
bench/tracing.py CalculateDose with OpenTelemetry tracing off and on, bench/auth.py
CalculateDose and ReserveStock with authentication on and off, bench/audit.py the same with
authentication and the audit trail on and both off. Every part's services trust a
development token issuer of their own; every call carries a token.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import audit as audit_bench
from bench import auth as auth_bench
from bench import booking as booking_bench
from bench import console_board as board_bench
from bench import contract as contract_bench
from bench import e2e_booking as e2e_bench
from bench import inventory as inventory_bench
from bench import optimiser as optimiser_bench
from bench import tracing as tracing_bench
from bench.dose import prepare_dose_request
from bench.harness import (
    ROOT,
    cpu_ms_per_call,
    dev_issuer,
    environment,
    free_port,
    load,
    measured_load,
    operator_token,
    running,
)
from infusion.inventory.v1 import inventory_pb2 as inv
from services.launcher import SERVICES

OPTIMISER_PARTS = ("deviation", "centre", "nurse", "small")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--only",
        choices=(
            "scheduler",
            "inventory",
            "booking",
            "e2e",
            "contract",
            "tracing",
            "auth",
            "audit",
            "optimiser",
            "board",
        ),
        default=None,
    )
    args = parser.parse_args()
    if args.only == "optimiser":
        optimiser_bench.run(OPTIMISER_PARTS, 3, 30.0)
        return 0
    if args.only == "board":
        print_board(board_bench.run(lambda m: print(m, file=sys.stderr)))
        return 0
    results: dict[str, dict[str, Any]] = {}
    checks: dict[str, Any] = {}
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp, dev_issuer() as issuer:
        databases = {name: f"sqlite:///{tmp}/{name}.db" for name in SERVICES}
        env = environment(issuer, databases)
        token = operator_token(issuer)
        try:
            echo = f"127.0.0.1:{free_port()}"
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.echo_server", echo],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            time.sleep(1.0)
            results["echo (bare grpcio)"] = measured_load(
                procs[-1].pid,
                None,
                echo,
                "/bench.Echo/Echo",
                b"\x0a\x05hello",
                args.seconds,
                args.concurrency,
            )
            procs[-1].terminate()
            if args.only in (None, "scheduler"):
                with running(env, ("inventory", "scheduler")) as processes:
                    inventory = processes.addresses["inventory"]
                    scheduler = processes.addresses["scheduler"]
                    dose = prepare_dose_request(scheduler, inventory, token)
                    results["CalculateDose (2-day induction)"] = load(
                        scheduler,
                        "/infusion.scheduler.v1.SchedulerService/CalculateDose",
                        dose.SerializeToString(),
                        args.seconds,
                        args.concurrency,
                        token=token,
                    )
                    products = inv.ListProductsRequest(page_size=20)
                    results["ListProducts (12 products)"] = load(
                        inventory,
                        "/infusion.inventory.v1.InventoryService/ListProducts",
                        products.SerializeToString(),
                        args.seconds,
                        args.concurrency,
                        token=token,
                    )
            if args.only in (None, "tracing"):
                tracing_part = tracing_bench.run(
                    args.seconds, args.concurrency, lambda m: print(m, file=sys.stderr)
                )
                results.update(tracing_part["results"])
                checks.update(tracing_part["checks"])
            if args.only in (None, "booking"):
                booking_part = booking_bench.run(
                    args.seconds, args.concurrency, lambda m: print(m, file=sys.stderr)
                )
                results.update(booking_part["results"])
                checks.update(booking_part["checks"])
            if args.only in (None, "e2e"):
                e2e_part = e2e_bench.run(args.seconds, 16, lambda m: print(m, file=sys.stderr))
                results.update(e2e_part["results"])
                checks.update(e2e_part["checks"])
            if args.only in (None, "auth"):
                auth_part = auth_bench.run(
                    args.seconds, args.concurrency, lambda m: print(m, file=sys.stderr)
                )
                results.update(auth_part["results"])
                checks["auth_overhead"] = auth_part["overhead"]
            if args.only in (None, "audit"):
                audit_part = audit_bench.run(
                    args.seconds, args.concurrency, lambda m: print(m, file=sys.stderr)
                )
                results.update(audit_part["results"])
                checks["audit_overhead"] = audit_part["overhead"]
            if args.only in (None, "inventory"):
                inventory_part = inventory_bench.run(
                    args.seconds, args.concurrency, lambda m: print(m, file=sys.stderr)
                )
                results.update(inventory_part["results"])
                checks.update(inventory_part["checks"])
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=15)
    echo_rate = results["echo (bare grpcio)"]["calls_per_second"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\n{dt.date.today()} — {machine}; {args.concurrency} in flight, {args.seconds:g} s\n")
    print(
        "| target | calls/s | share of echo | share of lean | p50 ms | p99 ms | errors "
        "| CPU ms a call: server · database · load |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        share = r["calls_per_second"] / echo_rate if echo_rate else 0
        print(
            f"| {name} | {r['calls_per_second']:.0f} | {share:.0%} | {lean_share(results, r)} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {cpu_split(r)} |"
        )
    if checks:
        print(f"\ninventory checks after the ReserveStock runs: {json.dumps(checks)}")
    contract: dict[str, Any] = {}
    if args.only in (None, "scheduler", "inventory", "contract"):
        contract = contract_bench.run()
        print("\n| request contract, per call | checked µs | bare µs | cost µs |")
        print("| --- | ---: | ---: | ---: |")
        for name, c in contract.items():
            print(f"| {name} | {c['checked_us']:.1f} | {c['bare_us']:.1f} | {c['cost_us']:.1f} |")
    board: dict[str, Any] = {}
    if args.only is None:
        board = board_bench.run(lambda m: print(m, file=sys.stderr))
        print_board(board)
        optimiser_bench.run(OPTIMISER_PARTS, 3, 30.0)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(
        json.dumps(
            {
                "date": str(dt.date.today()),
                "machine": machine,
                "concurrency": args.concurrency,
                "seconds": args.seconds,
                "results": results,
                "inventory_checks": checks,
                "contract_us": contract,
                "console_board": board,
            },
            indent=2,
        )
    )
    return 0


def cpu_split(result: dict[str, Any]) -> str:
    """Where a call's machine time went, where the part measured it (``measured_load``): the
    server's, its database's and the load generator's CPU milliseconds a call; the load's
    alone for the others."""
    cpu = result.get("cpu_ms")
    if cpu is None:
        load_ms = cpu_ms_per_call(float(result.get("cpu_seconds", 0.0)), result)
        return f"– · – · {load_ms:.2f}"
    return f"{cpu['server']:.2f} · {cpu['database']:.2f} · {cpu['load']:.2f}"


def lean_share(results: dict[str, dict[str, Any]], row: dict[str, Any]) -> str:
    """A hot path's calls/s over its lean baseline's in the same run (bench/lean.py; the row
    names it as "lean_baseline"), the issue's measure of the write paths; blank elsewhere."""
    lean = results.get(row.get("lean_baseline", ""), {}).get("calls_per_second", 0)
    if row.get("lean_baseline"):
        row["share_of_lean"] = round(row["calls_per_second"] / lean, 3) if lean else 0.0
        return f"{row['share_of_lean']:.0%}"
    return ""


def print_board(board: dict[str, Any]) -> None:
    """The console board's latency (one request at a time; the target is p95 under 300 ms)."""
    print("\n| console page, one at a time | requests | p50 ms | p95 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in board["results"].items():
        print(f"| {name} | {r['requests']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |")


if __name__ == "__main__":
    raise SystemExit(main())
