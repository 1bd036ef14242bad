"""Notify and the scheduler's due scan, next to a bare grpcio echo server
measured in the same run. `python -m bench.notify [--seconds 10] [--plans 100000]`

On a throwaway PostgreSQL database (127.0.0.1:5432, user postgres; created and dropped here):

1. **Publish** throughput: notify as a process (as under `make run`), dispatcher off, 32 calls
   in flight over 4 connections, each a LOT_EXPIRING for one named subscriber with a webhook
   (one delivery each), every call its own request_id (bench.load --unique-field).
   ``--processes N`` (default NOTIFY_PROCESSES, else 1) runs notify as N processes behind one
   port, each with its own dispatcher in step 2.
2. **Webhook delivery**: the deliveries step 1 left PENDING, drained by a notify process whose
   dispatcher is on (NOTIFY_DISPATCH_WORKERS 8, batch 50, the defaults) to a local HTTP sink
   (bench/sink.py, a process of its own, keep-alive, answering 204); then **end to end**: a
   fixed number of Publish calls (over 4 connections) while the dispatcher runs, timed from the
   first call until the sink has every delivery. The sink counts posts and distinct
   Idempotency-Keys: every delivery must arrive exactly once.
3. **Fan-out**: 50 concurrent Subscribe streams (threads of this process) while notifications
   are published; every stream must receive every event.
4. **Due scan** over N active plans (default 100,000) seeded straight into the scheduler's
   tables, run in this process with a fixed clock: the first pass (no watermark: every plan),
   a day's pass (the plans whose window opens that day, 1/28 of them), and a pass with
   nothing due. Target for the day's pass: under 2 s. ``--no-due-scan`` skips it.

Prints a Markdown table and writes bench/results/notify.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
from google.type.date_pb2 import Date
from sqlalchemy import create_engine, func, insert, select

from bench import sink
from bench.harness import (
    ROOT,
    channel,
    cpu_seconds,
    database_cpu_seconds,
    dev_issuer,
    free_port,
    load,
    process,
    throwaway_database,
    wait_port,
)
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from services.common.clock import FixedClock
from services.common.db import Database
from services.common.migrations import upgrade
from services.issuer.local import LocalIssuer

PUBLISH = "/infusion.notify.v1.NotifyService/Publish"
ECHO = "/bench.Echo/Echo"
REQUEST_ID = 7  # PublishRequest.request_id
RESULTS = ROOT / "bench" / "results" / "notify.json"


@dataclass(frozen=True)
class Notify:
    address: str
    pid: int  # the parent of the workers, with NOTIFY_PROCESSES above 1

    def cpu_seconds(self) -> float:
        """CPU time so far of the service: its process and the workers it started."""
        return cpu_seconds(self.pid)


@contextmanager
def notify_process(
    url: str, jobs: bool, issuer: LocalIssuer, workers: int = 8, processes: int = 1
) -> Iterator[Notify]:
    """Notify as `make run` starts it; with ``processes`` above 1, that many workers behind
    one port (NOTIFY_PROCESSES, docs/operations.md "Several processes per service"), each
    with its own dispatcher when ``jobs``."""
    address = f"127.0.0.1:{free_port()}"
    env = {
        "NOTIFY_PROCESSES": str(processes),
        **issuer.service_environment(),
        "NOTIFY_DATABASE_URL": url,
        "NOTIFY_LISTEN": address,
        "NOTIFY_JOBS": "1" if jobs else "0",
        "NOTIFY_DISPATCH_WORKERS": str(workers),
        "NOTIFY_GRPC_WORKERS": "32",  # 32 calls in flight
        # the fan-out's streams, all from this process (one caller)
        "NOTIFY_GRPC_MAX_STREAMS": "128",
        "NOTIFY_GRPC_MAX_STREAMS_PER_CALLER": "128",
        "NOTIFY_WEBHOOK_ALLOW_LIST": "127.0.0.1",  # the local sink
        # a connection for each call in flight (32 over the processes) and for the process's
        # own work (dispatcher, the stream's placement and watcher, the audit linker): with
        # fewer, the pool's overflow opens and closes a connection for many a call
        "NOTIFY_DB_POOL_SIZE": str(-(-32 // processes) + 4),
        "NOTIFY_SHUTDOWN_GRACE_SECONDS": "2",
        "NOTIFY_HEARTBEAT_SECONDS": "5",
        "PYTHONUNBUFFERED": "1",
    }
    with process([sys.executable, "-m", "services.notify"], address, env) as started:
        yield Notify(address, started.pid)


# --- notify -------------------------------------------------------------------------------------


def lot_expiring(n: int = 0) -> npb.Payload:
    return npb.Payload(
        lot_expiring=npb.LotExpiringPayload(
            site_id="bench-site",
            lot_id=f"lot-{n}",
            product_id="privigen",
            lot_number=f"LOT{n:05d}",
            expiry_date=Date(year=2027, month=1, day=31),
            days_left=30,
            threshold_days=30,
            on_hand_vials=12,
            reserved_vials=3,
        )
    )


def subscribers(stub: Any, sink_url: str) -> tuple[str, str]:
    """A webhook subscriber, and one with LOT_EXPIRING switched off (events, no deliveries)."""
    hook = stub.CreateSubscriber(
        npb.CreateSubscriberRequest(
            request_id="bench-hook",
            subscriber=npb.Subscriber(
                external_ref="bench-hook",
                display_name="Bench sink",
                time_zone="Europe/London",
                kind=npb.SUBSCRIBER_KIND_STAFF,
                webhook_url=sink_url,
                webhook_secret="bench-secret",
                preferences=[
                    npb.Preference(topic=npb.TOPIC_LOT_EXPIRING, channels=[npb.CHANNEL_WEBHOOK])
                ],
            ),
        )
    ).subscriber.id
    quiet = stub.CreateSubscriber(
        npb.CreateSubscriberRequest(
            request_id="bench-quiet",
            subscriber=npb.Subscriber(
                external_ref="bench-quiet",
                display_name="Streams only",
                time_zone="Europe/London",
                kind=npb.SUBSCRIBER_KIND_STAFF,
                preferences=[npb.Preference(topic=npb.TOPIC_LOT_EXPIRING, channels=[])],
            ),
        )
    ).subscriber.id
    return hook, quiet


def publish_request(subscriber: str, n: int = 0, request_id: str = "") -> npb.PublishRequest:
    return npb.PublishRequest(
        topic=npb.TOPIC_LOT_EXPIRING,
        subscriber_ids=[subscriber],
        payload=lot_expiring(n),
        request_id=request_id,
    )


def publish_many(
    address: str,
    token: str,
    subscriber: str,
    count: int,
    tag: str,
    workers: int = 32,
    connections: int = 4,
) -> None:
    """``count`` Publish calls, ``workers`` at a time, dealt out over ``connections`` HTTP/2
    connections (as bench.load does: each process of a service behind SO_REUSEPORT gets
    some)."""
    opened = [channel(address, token, own_connection=True) for _ in range(connections)]
    stubs = [notify_pb2_grpc.NotifyServiceStub(c) for c in opened]

    def one(n: int) -> None:
        stub = stubs[n % connections]
        stub.Publish(publish_request(subscriber, n, f"{tag}-{n}"), timeout=60)

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(count)))
    finally:
        for c in opened:
            c.close()


def deliveries(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            from services.notify.store.models import DeliveryRow

            return int(conn.execute(select(func.count()).select_from(DeliveryRow)).scalar() or 0)
    finally:
        engine.dispose()


def last_sequence(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            from services.notify.store.models import EventRow

            return int(conn.execute(select(func.max(EventRow.stream_seq))).scalar() or 0)
    finally:
        engine.dispose()


def fan_out(
    address: str, url: str, subscriber: str, streams: int, events: int, token: str
) -> dict[str, Any]:
    after = last_sequence(url)
    counts = [0] * streams
    last = [0.0] * streams
    done = threading.Barrier(streams + 1)
    ready = threading.Barrier(streams + 1)
    channels: list[grpc.Channel] = []

    def consume(i: int) -> None:
        opened = channel(address, token)
        channels.append(opened)
        stub = notify_pb2_grpc.NotifyServiceStub(opened)
        stream = stub.Subscribe(
            npb.SubscribeRequest(
                topics=[npb.TOPIC_LOT_EXPIRING], subscriber_ids=[subscriber], after_sequence=after
            )
        )
        ready.wait()
        try:
            for item in stream:
                if item.HasField("event"):
                    counts[i] += 1
                    last[i] = time.perf_counter()
                    if counts[i] >= events:
                        break
        finally:
            stream.cancel()
            done.wait()

    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(1.0)  # every stream has sent its request and is waiting for live events
    start = time.perf_counter()
    publish_many(address, token, subscriber, events, f"fanout-{os.getpid()}", workers=16)
    published = time.perf_counter()
    done.wait(timeout=300)
    finished = max(last)
    for c in channels:
        c.close()
    seconds = finished - start
    return {
        "streams": streams,
        "events": events,
        "every_stream_got_every_event": all(c == events for c in counts),
        "publish_per_second": round(events / (published - start), 1),
        "stream_messages_per_second": round(streams * events / seconds, 1),
        "last_event_after_publishing_ms": round((finished - published) * 1000, 1),
        "seconds": round(seconds, 3),
    }


def notify_benchmarks(
    url: str,
    seconds: float,
    concurrency: int,
    streams: int,
    fanout_events: int,
    e2e: int,
    log: Callable[[str], None],
    issuer: LocalIssuer,
    workers: int = 8,
    processes: int = 1,
) -> dict[str, Any]:
    """Notify's calls come from a hospital system (the integration role); its webhook
    deliveries go to a sink process (bench/sink.py)."""
    token = issuer.token("integration", "bench")
    upgrade("notify", Database(url).engine)
    out: dict[str, Any] = {}
    with sink.running() as hooks:
        with notify_process(url, jobs=False, issuer=issuer, processes=processes) as service:
            address = service.address
            opened = channel(address, token)
            stub = notify_pb2_grpc.NotifyServiceStub(opened)
            hook, quiet = subscribers(stub, hooks.url)
            stub.Publish(publish_request(hook, request_id="warm-up"))
            log(f"notify: Publish, {concurrency} in flight, {seconds} s")
            cpu, before = service.cpu_seconds(), deliveries(url)
            database = database_cpu_seconds(url)
            out["publish"] = load(
                address,
                PUBLISH,
                publish_request(hook).SerializeToString(),
                seconds,
                concurrency,
                unique_field=REQUEST_ID,
                token=token,
            )
            # every call the load made, its warm-up's too: one delivery each
            calls = deliveries(url) - before
            out["publish"]["server_cpu_ms_per_call"] = round(
                (service.cpu_seconds() - cpu) * 1000 / calls, 3
            )
            out["publish"]["database_cpu_ms_per_call"] = round(
                (database_cpu_seconds(url) - database) * 1000 / calls, 3
            )
            out["publish"]["load_cpu_ms_per_call"] = round(
                float(out["publish"].get("cpu_seconds", 0.0)) * 1000 / calls, 3
            )
            opened.close()
        pending = deliveries(url)  # the measured calls plus the load's warm-up
        with notify_process(
            url, jobs=True, issuer=issuer, workers=workers, processes=processes
        ) as service:
            address = service.address
            log(f"notify: draining {pending} webhook deliveries")
            # notify's CPU from its first delivery (its start-up's is not the drain's)
            hooks.wait_for(1, timeout=60)
            cpu, sent = service.cpu_seconds(), hooks.status().keys
            end = hooks.wait_for(pending, timeout=300)
            cpu = service.cpu_seconds() - cpu
            # from the first delivery the sink saw: the dispatcher starts with the process,
            # before the bench sees it serving
            start = hooks.status().first
            out["webhook_drain"] = {
                "deliveries": pending,
                "seconds": round(end - start, 3),
                "per_second": round(pending / (end - start), 1),
                "server_cpu_ms_per_delivery": round(cpu * 1000 / max(pending - sent, 1), 3),
            }
            log(f"notify: end to end, {e2e} notifications published while dispatching")
            cpu = service.cpu_seconds()
            start = time.time()  # the sink reports wall-clock times
            publish_many(address, token, hook, e2e, f"e2e-{os.getpid()}")
            published = time.time()
            total = deliveries(url)
            end = hooks.wait_for(total, timeout=300)
            received = hooks.status()
            cpu = service.cpu_seconds() - cpu
            out["webhook_end_to_end"] = {
                "notifications": e2e,
                "seconds": round(end - start, 3),
                "per_second": round(e2e / (end - start), 1),
                "publish_seconds": round(published - start, 3),
                # Publish and delivery: notify's CPU time over the notifications
                "server_cpu_ms_per_notification": round(cpu * 1000 / e2e, 3),
                "repeats_at_sink": received.posts - received.keys,
                # every delivery of the run (drained and end to end) arrived once, none twice
                "exactly_once": received.posts == received.keys == total,
            }
            log(f"notify: fan-out to {streams} streams, {fanout_events} events")
            out["fan_out"] = fan_out(address, url, quiet, streams, fanout_events, token)
    return out


# --- the scheduler's due scan -------------------------------------------------------------------


def seed_plans(url: str, plans: int, today: dt.date, now: dt.datetime) -> None:
    """One London site, ``plans`` patients with an active 28-day plan each, first doses due
    spread evenly over the next 28 days (so 1/28 of the windows open on any day)."""
    from services.scheduler.domain.plans import DoseBasis, Indication, Route, TherapyPlan
    from services.scheduler.store.codec import plan_to_spec
    from services.scheduler.store.models import PatientRow, PlanRow, PlanVersionRow, SiteRow

    db = Database(url)
    upgrade("scheduler", db.engine)
    stamp = {"revision": 1, "created_at": now, "updated_at": now}
    with db.write() as s:
        s.execute(
            insert(SiteRow),
            [
                {
                    "id": "bench-site",
                    "organisation_id": "bench",
                    "display_name": "Bench unit",
                    "time_zone": "Europe/London",
                    "opening_hours": [],
                    "closure_dates": [],
                    "capacity": {},
                    **stamp,
                }
            ],
        )
    batch = 10_000
    for first in range(0, plans, batch):
        ids = range(first, min(first + batch, plans))
        patients, rows, versions = [], [], []
        for i in ids:
            pid, plan_id = f"bench-patient-{i:06d}", f"bench-plan-{i:06d}"
            patients.append(
                {
                    "id": pid,
                    "organisation_id": "bench",
                    "mrn": f"B{i:06d}",
                    "given_name": "Bench",
                    "family_name": f"{i:06d}",
                    "birth_date": dt.date(1970, 1, 1),
                    "sex_at_birth": "FEMALE",
                    "notify_subscriber_id": "",
                    **stamp,
                }
            )
            rows.append(
                {
                    "id": plan_id,
                    "patient_id": pid,
                    "site_id": "bench-site",
                    "status": "ACTIVE",
                    "current_version": 1,
                    **stamp,
                }
            )
            plan = TherapyPlan(
                id=plan_id,
                patient_id=pid,
                site_id="bench-site",
                indication=Indication.MMN,
                route=Route.IV,
                product_id="privigen",
                dose_basis=DoseBasis.G_PER_KG,
                maintenance_dose=Decimal(1),
                interval_days=28,
                start_date=today + dt.timedelta(days=5 + i % 28),
            )
            versions.append(
                {
                    "plan_id": plan_id,
                    "version": 1,
                    "spec": plan_to_spec(plan),
                    "reason": "",
                    "created_at": now,
                }
            )
        with db.write() as s:
            s.execute(insert(PatientRow), patients)
            s.execute(insert(PlanRow), rows)
            s.execute(insert(PlanVersionRow), versions)
    db.dispose()


def due_scan_benchmark(url: str, plans: int, log: Callable[[str], None]) -> dict[str, Any]:
    from services.scheduler.jobs import SchedulerJobs

    today = dt.date(2026, 11, 24)
    now = dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.UTC)
    log(f"due scan: seeding {plans:,} active plans")
    seed_plans(url, plans, today, now - dt.timedelta(days=1))  # written yesterday
    db = Database(url)
    clock = FixedClock(now)
    jobs = SchedulerJobs(db, clock)
    out: dict[str, Any] = {"plans": plans}

    def timed(name: str) -> None:
        start = time.perf_counter()
        scan = jobs.due_scan()
        out[name] = {
            "seconds": round(time.perf_counter() - start, 3),
            "examined": scan.examined,
            "raised": scan.raised,
        }
        log(f"due scan: {name}: {out[name]}")

    # Windows open 4 days before the due date: today's first pass finds none open (the first
    # doses are 5–32 days ahead), tomorrow's the 1/28 whose window opens then.
    timed("first_pass")
    clock.set(dt.datetime(2026, 11, 25, 0, 5, tzinfo=dt.UTC))
    timed("day_pass")
    clock.advance(dt.timedelta(minutes=1))
    timed("idle_pass")
    db.dispose()
    return out


def due_scan_rows(scan: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for name, label in (
        ("first_pass", "first pass, no watermark"),
        ("day_pass", "a day's pass"),
        ("idle_pass", "nothing due"),
    ):
        r = scan[name]
        rows.append(
            (
                f"due scan, {scan['plans']:,} active plans: {label}",
                f"{r['seconds']:.3f} s",
                f"{r['examined']:,} plans read, {r['raised']:,} INFUSION_DUE",
            )
        )
    return rows


# --- the run ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--fanout-events", type=int, default=1000)
    parser.add_argument("--e2e", type=int, default=3000)
    parser.add_argument("--plans", type=int, default=100_000)
    parser.add_argument("--dispatch-workers", type=int, default=8)
    parser.add_argument(
        "--processes",
        type=int,
        default=int(os.environ.get("NOTIFY_PROCESSES", "1")),
        help="notify processes behind one port (NOTIFY_PROCESSES; default it, or 1)",
    )
    parser.add_argument("--no-due-scan", action="store_true", help="skip the scheduler's due scan")
    parser.add_argument(
        "--due-scan-only",
        action="store_true",
        help="only the scheduler's due scan (no services, no echo); prints its rows",
    )
    args = parser.parse_args()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.due_scan_only:
        with throwaway_database("notify") as url:
            alone = due_scan_benchmark(url, args.plans, log)
        print("| benchmark (PostgreSQL) | result | detail |")
        print("| --- | --- | --- |")
        for row in due_scan_rows(alone):
            print("| " + " | ".join(row) + " |")
        return 0

    echo_address = f"127.0.0.1:{free_port()}"
    echo_cmd = [sys.executable, "-m", "bench.echo_server", echo_address]
    with process(echo_cmd, echo_address, ready=wait_port):
        log("echo: bare grpcio")
        echo = load(echo_address, ECHO, b"\x0a\x05hello", args.seconds, args.concurrency)
    with throwaway_database("notify") as url, dev_issuer() as issuer:
        found = notify_benchmarks(
            url,
            args.seconds,
            args.concurrency,
            args.streams,
            args.fanout_events,
            args.e2e,
            log,
            issuer,
            args.dispatch_workers,
            args.processes,
        )
    scan: dict[str, Any] = {}
    if not args.no_due_scan:
        with throwaway_database("notify") as url:
            scan = due_scan_benchmark(url, args.plans, log)

    publish = found["publish"]
    echo_rate = float(echo["calls_per_second"])
    drain, e2e, fan = found["webhook_drain"], found["webhook_end_to_end"], found["fan_out"]
    rows = [
        (
            "echo (bare grpcio), 32 in flight",
            f"{echo_rate:,.0f} calls/s",
            f"p50 {echo['p50_ms']} ms, p99 {echo['p99_ms']} ms",
        ),
        (
            f"Publish (1 webhook delivery each), {args.concurrency} in flight, "
            f"{args.processes} notify process{'es' if args.processes > 1 else ''}",
            f"{publish['calls_per_second']:,.0f} calls/s "
            f"({publish['calls_per_second'] / echo_rate:.1%} of echo)",
            f"p50 {publish['p50_ms']} ms, p99 {publish['p99_ms']} ms, errors {publish['errors']}; "
            f"CPU ms a call: notify {publish['server_cpu_ms_per_call']}, its database "
            f"{publish['database_cpu_ms_per_call']}, the load {publish['load_cpu_ms_per_call']}",
        ),
        (
            f"webhook delivery, backlog drained ({args.dispatch_workers} dispatch workers)",
            f"{drain['per_second']:,.0f} deliveries/s",
            f"{drain['deliveries']:,} in {drain['seconds']} s; notify CPU "
            f"{drain['server_cpu_ms_per_delivery']} ms a delivery",
        ),
        (
            "webhook end to end (Publish → sink)",
            f"{e2e['per_second']:,.0f} notifications/s",
            f"{e2e['notifications']:,} in {e2e['seconds']} s; notify CPU "
            f"{e2e['server_cpu_ms_per_notification']} ms a notification; repeats at sink "
            f"{e2e['repeats_at_sink']}; every delivery once: {e2e['exactly_once']}",
        ),
        (
            f"fan-out, {fan['streams']} Subscribe streams",
            f"{fan['stream_messages_per_second']:,.0f} stream messages/s",
            f"{fan['events']:,} events each, all received: {fan['every_stream_got_every_event']}; "
            f"last {fan['last_event_after_publishing_ms']} ms after the last Publish",
        ),
    ]
    if scan:
        rows += due_scan_rows(scan)
    print("| benchmark (PostgreSQL) | result | detail |")
    print("| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "machine": {
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                },
                "processes": args.processes,
                "echo": echo,
                **found,
                "due_scan": scan,
                "table": [list(r) for r in rows],
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
