"""What authentication and the audit trail together cost: CalculateDose (a patient read: one
record per call, group-committed before the answer leaves) and ReserveStock (a mutation: one
record in its own transaction) as the services run, against ``bench.unaudited`` (the same build
with neither), alternating in one run as bench/auth.py does (its warm-up, rounds and server
CPU per call). Target: on within 15 % of off.

Next to it, in this process: what appending one record costs (SQLite file, one transaction per
record and 32 threads sharing group commits).

`python -m bench.run --only audit`
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.auth import calculate_dose, reserve_stock
from bench.harness import dev_issuer
from services.common.audit.record import PATIENT_READ, AuditRecord
from services.common.audit.store import AuditStore
from services.common.audit.trail import AuditTrail
from services.common.clock import SystemClock
from services.common.db import Database
from services.common.ids import new_id
from services.common.migrations import upgrade
from services.scheduler.store.models import audit_tables

BASELINE = "bench.unaudited"
WHAT = "auth + audit"


def _record(n: int) -> AuditRecord:
    return AuditRecord(
        id=new_id(),
        service="scheduler",
        occurred_at=dt.datetime.now(dt.UTC),
        method="/infusion.scheduler.v1.SchedulerService/CalculateDose",
        kind=PATIENT_READ,
        resource_type="TherapyPlan",
        resource_ids=(f"plan-{n}",),
        patient_ids=(f"patient-{n}",),
        subject="bench",
        caller_kind="user",
        client_id="bench",
        roles=("prescriber",),
        token_id="jti",
        organisation_id="bench-org",
        peer="ipv4:127.0.0.1:1",
        outcome="OK",
        request_id="",
        purpose="",
    )


def append_costs(records: int = 2000, threads: int = 32) -> dict[str, float]:
    """Microseconds per record: stored one transaction each from one thread, through group
    commit from ``threads`` threads at once (SQLite, WAL, synchronous=NORMAL), and linked into
    the chain afterwards (batches of 500)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/scheduler.db")
        upgrade("scheduler", db.engine)
        trail = AuditTrail("scheduler", db, AuditStore("scheduler", audit_tables), SystemClock())
        started = time.perf_counter()
        for n in range(records):
            with db.write() as session:
                trail.store.insert(session.connection(), [_record(n)])
        alone = (time.perf_counter() - started) / records
        per_thread = records // threads

        def submit() -> None:
            for n in range(per_thread):
                trail.store_now(_record(n).raw())

        workers = [threading.Thread(target=submit) for _ in range(threads)]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        grouped = (time.perf_counter() - started) / (per_thread * threads)
        started = time.perf_counter()
        linked = trail.linker.link_all()
        link = (time.perf_counter() - started) / max(linked, 1)
        db.dispose()
    return {
        "append_one_transaction_each_us": round(alone * 1e6),
        "append_group_commit_32_threads_us": round(grouped * 1e6),
        "link_into_chain_us": round(link * 1e6),
    }


def run(seconds: float, concurrency: int, log: Callable[[str], None]) -> dict[str, Any]:
    with dev_issuer() as issuer:
        dose = calculate_dose(issuer, seconds, concurrency, log, BASELINE, WHAT)
        reserve = reserve_stock(issuer, seconds, concurrency, log, BASELINE, WHAT)
    overhead: dict[str, float] = {
        "CalculateDose throughput lost": round(dose.throughput_lost, 4),
        "CalculateDose server CPU per call added": round(dose.cpu_added, 4),
        "ReserveStock throughput lost": round(reserve.throughput_lost, 4),
        "ReserveStock server CPU per call added": round(reserve.cpu_added, 4),
        **append_costs(),
    }
    log(f"audit: what authentication and the audit trail cost: {overhead}")
    return {"results": {**dose.results, **reserve.results}, "overhead": overhead}
