"""What authentication costs: CalculateDose and ReserveStock with it on and off, in one run.

On: the service as `make run` starts it; every call carries a bearer token (the same token
throughout, as a client reuses its token: the verifier checks its signature once and then
finds it in its cache). Off: ``bench.unauthenticated``, the same build without the
authentication interceptor, on the same database, started after the real one; the load sends
the same header to both. The two are measured alternately (on, off, off, on, on, off...) so that
the shared machine's drift hits both alike and neither always runs right after the other,
after an unmeasured warm-up of each (a process's first seconds under load are slower: an A/A
run of two identical servers showed the second one started 25 % behind in its first round).
Target: on within 15 % of off.

Throughput on a machine shared with other work swings by ±15 % from one 10 s round to the next,
more than authentication could cost, so each round also records the server process's own CPU
time per call (user + system, from /proc): what a call costs the server, whoever else is
running.

Next to the throughput, the cost per call measured in this process, free of the machine's
noise: the interceptor's gate for a token it has verified before (a hash and a dictionary
lookup, the permission check, the caller set and reset), and a first verification (the ES256
signature and the claims).

CalculateDose: the services on SQLite (as in bench/run.py), the scheduler's jobs off in both
(two job runners on one SQLite file would only add noise). ReserveStock: the inventory on a
throwaway PostgreSQL database with the 200-product shelf of bench/inventory.py, every call a
new appointment.

`python -m bench.run --only auth`
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import mean
from typing import Any
from zoneinfo import ZoneInfo

from bench.dose import prepare_dose_request
from bench.harness import (
    ROOT,
    channel,
    cpu_ms_per_call,
    cpu_seconds,
    dev_issuer,
    free_port,
    load,
    operator_token,
    seed,
    throwaway_database,
)
from bench.inventory import (
    APPOINTMENT_ID,
    RESERVE,
    SPREAD_VIALS,
    prepare,
    reserve_request,
)
from infusion.inventory.v1 import inventory_pb2_grpc
from services.common.auth.interceptor import Gate
from services.common.auth.policy import policy_of
from services.common.auth.roles import Roles
from services.common.auth.verifier import TokenVerifier
from services.common.health import wait_serving
from services.common.identity import acting_as
from services.issuer.issuer import OPERATOR_ROLES, Issuer
from services.issuer.local import LocalIssuer
from services.issuer.memory import InMemoryKeys

DOSE = "/infusion.scheduler.v1.SchedulerService/CalculateDose"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
"""Alternating rounds per comparison (``BENCH_ROUNDS``): three by default; more narrow the
mean on a noisy host (an A/A pair of one build differed by 5 % over three rounds, 21 % in one)."""
WARM_UP_SECONDS = 5.0
ON, OFF = "services", "bench.unauthenticated"


@contextmanager
def process(module: str, name: str, env: dict[str, str]) -> Iterator[int]:
    """``python -m <module> <name>`` (``services.scheduler`` when module is ``services``);
    yields its pid."""
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
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass(frozen=True)
class Target:
    address: str
    pid: int


@dataclass(frozen=True)
class Comparison:
    results: dict[str, dict[str, Any]]
    throughput_lost: float  # 1 - on/off, mean calls/s over the rounds
    cpu_added: float  # on/off - 1, mean server CPU time per call over the rounds


def compare(
    label: str,
    targets: dict[str, Target],
    measure: Callable[[str, float], dict[str, Any]],
    seconds: float,
    what: str = "auth",
) -> Comparison:
    """Warm both up, then alternate rounds on the ``on`` and ``off`` targets."""
    for target in targets.values():
        measure(target.address, WARM_UP_SECONDS)
    results: dict[str, dict[str, Any]] = {}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    for n in range(1, ROUNDS + 1):
        # odd rounds on first, even rounds off first: neither build always follows the other
        for which in ("on", "off") if n % 2 else ("off", "on"):
            target = targets[which]
            before = cpu_seconds(target.pid)
            result = measure(target.address, seconds)
            result["server_cpu_ms_per_call"] = cpu_ms_per_call(
                cpu_seconds(target.pid) - before, result
            )
            results[f"{label}, {what} {which} (round {n})"] = result
            rates[which].append(float(result["calls_per_second"]))
            cpu[which].append(result["server_cpu_ms_per_call"])
    return Comparison(
        results,
        1 - mean(rates["on"]) / mean(rates["off"]),
        mean(cpu["on"]) / mean(cpu["off"]) - 1,
    )


def calculate_dose(
    issuer: LocalIssuer,
    seconds: float,
    concurrency: int,
    log: Callable[[str], None],
    baseline: str = OFF,
    what: str = "auth",
) -> Comparison:
    """``baseline``: the module serving the "off" build (bench.unauthenticated here,
    bench.unaudited for bench/audit.py)."""
    token = operator_token(issuer)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **issuer.service_environment(), "PYTHONUNBUFFERED": "1"}
        inventory = f"127.0.0.1:{free_port()}"
        addresses = {"on": f"127.0.0.1:{free_port()}", "off": f"127.0.0.1:{free_port()}"}
        env.update(
            INVENTORY_LISTEN=inventory,
            INVENTORY_ADDRESS=inventory,
            INVENTORY_DATABASE_URL=f"sqlite:///{tmp}/inventory.db",
            INVENTORY_JOBS="0",
            SCHEDULER_DATABASE_URL=f"sqlite:///{tmp}/scheduler.db",
            SCHEDULER_JOBS="0",
        )
        seed(env)
        on = {**env, "SCHEDULER_LISTEN": addresses["on"]}
        off = {**env, "SCHEDULER_LISTEN": addresses["off"]}
        with (
            process(ON, "inventory", env),
            process(ON, "scheduler", on) as on_pid,
            process(baseline, "scheduler", off) as off_pid,  # after the first: migrated
        ):
            dose = prepare_dose_request(addresses["on"], inventory, token).SerializeToString()
            log(f"{what}: CalculateDose, on and off")
            return compare(
                "CalculateDose (2-day induction)",
                {"on": Target(addresses["on"], on_pid), "off": Target(addresses["off"], off_pid)},
                lambda address, s: load(address, DOSE, dose, s, concurrency, token=token),
                seconds,
                what,
            )


def reserve_stock(
    issuer: LocalIssuer,
    seconds: float,
    concurrency: int,
    log: Callable[[str], None],
    baseline: str = OFF,
    what: str = "auth",
) -> Comparison:
    token = operator_token(issuer)
    today = dt.datetime.now(ZoneInfo("Europe/London")).date()
    addresses = {"on": f"127.0.0.1:{free_port()}", "off": f"127.0.0.1:{free_port()}"}
    with throwaway_database("auth") as url:
        env = {
            **os.environ,
            **issuer.service_environment(),
            "PYTHONUNBUFFERED": "1",
            "INVENTORY_DATABASE_URL": url,
            "INVENTORY_SHUTDOWN_GRACE_SECONDS": "2",
        }
        seed(env)
        with (
            process(ON, "inventory", {**env, "INVENTORY_LISTEN": addresses["on"]}) as on_pid,
            process(
                baseline, "inventory", {**env, "INVENTORY_LISTEN": addresses["off"]}
            ) as off_pid,
        ):
            return _reserve(
                {"on": Target(addresses["on"], on_pid), "off": Target(addresses["off"], off_pid)},
                token,
                today,
                seconds,
                concurrency,
                log,
                what,
            )


def _reserve(
    targets: dict[str, Target],
    token: str,
    today: dt.date,
    seconds: float,
    concurrency: int,
    log: Callable[[str], None],
    what: str,
) -> Comparison:
    opened = channel(targets["on"].address, token)
    log(f"{what}: seeding the inventory's shelf through the RPCs")
    # the default shelf holds three rounds of each build; more rounds get a larger one (a
    # shelf run out answers refusals, faster than reservations)
    _, spread = prepare(
        inventory_pb2_grpc.InventoryServiceStub(opened),
        today,
        SPREAD_VIALS * math.ceil(ROUNDS / 3),
    )
    opened.close()
    requests = [
        reserve_request(p, today + dt.timedelta(days=7)).SerializeToString() for p in spread
    ]
    log(f"{what}: ReserveStock, on and off")
    return compare(
        "ReserveStock, 200 products spread, PostgreSQL",
        targets,
        lambda address, s: load(
            address,
            RESERVE,
            requests,
            s,
            concurrency,
            unique_field=APPOINTMENT_ID,
            token=token,
        ),
        seconds,
        what,
    )


class _Context:
    """What the gate reads of a call: its metadata."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"), ("user-agent", "bench"))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def abort(self, code: object, details: str) -> None:
        raise RuntimeError(details)


def per_call_costs(calls: int = 100_000, tokens: int = 300) -> dict[str, float]:
    """Microseconds per call: the gate with a cached token; a first verification."""
    issuer = Issuer.fresh("https://issuer.bench")
    keys = InMemoryKeys(issuer, cooldown=30)
    verifier = TokenVerifier(
        lambda: keys,
        issuer=issuer.url,
        audience=issuer.audience,
        leeway_seconds=30,
        roles=Roles.default(),
    )
    gate = Gate(DOSE, policy_of(DOSE), verifier)
    context: Any = _Context(issuer.user_token(OPERATOR_ROLES))
    gate.caller(context)
    started = time.perf_counter()
    for _ in range(calls):
        with acting_as(gate.caller(context)):
            pass
    cached = (time.perf_counter() - started) / calls
    fresh = [issuer.user_token(OPERATOR_ROLES) for _ in range(tokens)]
    started = time.perf_counter()
    for token in fresh:
        verifier.caller(token)
    first = (time.perf_counter() - started) / tokens
    return {
        "gate_cached_token_us": round(cached * 1e6, 1),
        "first_verification_us": round(first * 1e6),
    }


def run(seconds: float, concurrency: int, log: Callable[[str], None]) -> dict[str, Any]:
    with dev_issuer() as issuer:
        dose = calculate_dose(issuer, seconds, concurrency, log)
        reserve = reserve_stock(issuer, seconds, concurrency, log)
    overhead: dict[str, float] = {
        "CalculateDose throughput lost": round(dose.throughput_lost, 4),
        "CalculateDose server CPU per call added": round(dose.cpu_added, 4),
        "ReserveStock throughput lost": round(reserve.throughput_lost, 4),
        "ReserveStock server CPU per call added": round(reserve.cpu_added, 4),
        **per_call_costs(),
    }
    log(f"auth: what authentication costs: {overhead}")
    return {"results": {**dose.results, **reserve.results}, "overhead": overhead}
