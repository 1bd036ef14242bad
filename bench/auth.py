"""What authentication costs: CalculateDose and ReserveStock with it on and off, in one run.

On: the service as `make run` starts it; every call carries a bearer token (the same token
throughout, as a client reuses its token: the verifier checks its signature once and then
finds it in its cache). Off: ``bench.unauthenticated``, the same build without the
authentication interceptor, on the same database, started after the real one; the load sends
the same header to both. The two are measured alternately (on, off, on, off) so that the shared
machine's drift hits both alike. Target: on within 15 % of off.

CalculateDose: the services on SQLite (as in bench/run.py), the scheduler's jobs off in both
(two job runners on one SQLite file would only add noise). ReserveStock: the inventory on a
throwaway PostgreSQL database with the 200-product shelf of bench/inventory.py, every call a
new appointment.

`python -m bench.run --only auth`
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from statistics import mean
from typing import Any
from zoneinfo import ZoneInfo

from bench.dose import prepare_dose_request
from bench.harness import ROOT, channel, dev_issuer, free_port, load, operator_token, seed
from bench.inventory import (
    APPOINTMENT_ID,
    RESERVE,
    inventory_process,
    prepare,
    reserve_request,
    throwaway_database,
)
from infusion.inventory.v1 import inventory_pb2_grpc
from services.common.health import wait_serving
from services.issuer.local import LocalIssuer

DOSE = "/infusion.scheduler.v1.SchedulerService/CalculateDose"
ROUNDS = 3
ON, OFF = "services", "bench.unauthenticated"


@contextmanager
def process(module: str, name: str, env: dict[str, str]) -> Iterator[None]:
    """``python -m <module> <name>`` (``services.scheduler`` when module is ``services``)."""
    args = [f"services.{name}"] if module == ON else [module, name]
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        address = env[f"{name.upper()}_LISTEN"]
        if not wait_serving(address):
            raise RuntimeError(f"{' '.join(args)} did not become SERVING on {address}")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def compare(
    label: str, targets: dict[str, str], measure: Callable[[str], dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], float]:
    """Alternate rounds on the ``on`` and ``off`` addresses; returns the results and what
    authentication costs as a share of the unauthenticated throughput."""
    results: dict[str, dict[str, Any]] = {}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for n in range(1, ROUNDS + 1):
        for which in ("on", "off"):
            result = measure(targets[which])
            results[f"{label}, auth {which} (round {n})"] = result
            rates[which].append(float(result["calls_per_second"]))
    return results, 1 - mean(rates["on"]) / mean(rates["off"])


def calculate_dose(
    issuer: LocalIssuer, seconds: float, concurrency: int, log: Callable[[str], None]
) -> tuple[dict[str, dict[str, Any]], float]:
    token = operator_token(issuer)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **issuer.service_environment(), "PYTHONUNBUFFERED": "1"}
        inventory = f"127.0.0.1:{free_port()}"
        targets = {"on": f"127.0.0.1:{free_port()}", "off": f"127.0.0.1:{free_port()}"}
        env.update(
            INVENTORY_LISTEN=inventory,
            INVENTORY_ADDRESS=inventory,
            INVENTORY_DATABASE_URL=f"sqlite:///{tmp}/inventory.db",
            INVENTORY_JOBS="0",
            SCHEDULER_DATABASE_URL=f"sqlite:///{tmp}/scheduler.db",
            SCHEDULER_JOBS="0",
        )
        seed(env)
        on = {**env, "SCHEDULER_LISTEN": targets["on"]}
        off = {**env, "SCHEDULER_LISTEN": targets["off"]}
        with (
            process(ON, "inventory", env),
            process(ON, "scheduler", on),
            process(OFF, "scheduler", off),  # after the first: its migrations are done
        ):
            dose = prepare_dose_request(targets["on"], inventory, token).SerializeToString()
            log("auth: CalculateDose, on and off")
            return compare(
                "CalculateDose (2-day induction)",
                targets,
                lambda address: load(address, DOSE, dose, seconds, concurrency, token=token),
            )


def reserve_stock(
    issuer: LocalIssuer, seconds: float, concurrency: int, log: Callable[[str], None]
) -> tuple[dict[str, dict[str, Any]], float]:
    token = operator_token(issuer)
    today = dt.datetime.now(ZoneInfo("Europe/London")).date()
    with (
        throwaway_database("auth") as url,
        inventory_process(url, issuer) as on,
        inventory_process(url, issuer, "bench.unauthenticated inventory") as off,
    ):
        opened = channel(on, token)
        log("auth: seeding the inventory's shelf through the RPCs")
        _, spread = prepare(inventory_pb2_grpc.InventoryServiceStub(opened), today)
        opened.close()
        requests = [
            reserve_request(p, today + dt.timedelta(days=7)).SerializeToString() for p in spread
        ]
        log("auth: ReserveStock, on and off")
        return compare(
            "ReserveStock, 200 products spread, PostgreSQL",
            {"on": on, "off": off},
            lambda address: load(
                address,
                RESERVE,
                requests,
                seconds,
                concurrency,
                unique_field=APPOINTMENT_ID,
                token=token,
            ),
        )


def run(seconds: float, concurrency: int, log: Callable[[str], None]) -> dict[str, Any]:
    with dev_issuer() as issuer:
        dose, dose_cost = calculate_dose(issuer, seconds, concurrency, log)
        reserve, reserve_cost = reserve_stock(issuer, seconds, concurrency, log)
    overhead = {"CalculateDose": round(dose_cost, 4), "ReserveStock": round(reserve_cost, 4)}
    log(f"auth: throughput lost to authentication: {overhead}")
    return {"results": {**dose, **reserve}, "overhead": overhead}
