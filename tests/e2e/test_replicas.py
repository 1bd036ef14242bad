"""Two replicas of each service on one PostgreSQL database: no job runs twice, no
outbox row is delivered twice with a different effect.

- inventory: both run the daily check at once and both relays carry the outbox to notify, yet
  every event is raised once and notified once (dedupe keys in the outbox, SKIP LOCKED in the
  relays, request ids at notify);
- scheduler: both run the due scan every second and both relays carry bookings to the
  inventory; clients book through both at once: no chair is double-booked, every INFUSION_DUE
  is raised and notified once, every booking is reserved once;
- notify: publishes (and repeats of them) go to both at once; both dispatchers deliver to a
  webhook, each delivery arrives once, and a Subscribe stream on either replica sees the same
  sequence without gaps or duplicates.

Every replica's background threads must survive (Fleet.assert_no_crashed_threads): both pick
up the one-off start-up jobs of the job store they share. Two replicas started at once on an
empty database both come up (migrations take an advisory lock); on a populated one, holding
every kind of stored job, after a SIGKILL: tests/e2e/test_restarts.py.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.timeofday_pb2 import TimeOfDay

from demo.builder import Pharmacy, pb_date
from demo.centre import load_notify
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.notify.adapters.channels import IDEMPOTENCY_HEADER
from tests.e2e.harness import Clinic, Fleet, holds_within, notifications, query, undelivered

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_two_inventory_replicas_raise_and_deliver_each_event_once(
    postgres_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, tls=True)
    fleet.env.update(
        INVENTORY_DATABASE_URL=postgres_url,
        NOTIFY_DATABASE_URL=f"sqlite:///{tmp_path / 'notify.db'}",
        NOTIFY_ADDRESS=fleet.address("notify"),
    )
    fleet.run("services.inventory", "seed")
    try:
        fleet.start("notify")
        load_notify(  # a console subscriber for every topic
            fleet.address("notify"), fleet.operator, tls=fleet.client_tls("notify")
        )
        names = ("inventory-1", "inventory-2")
        # one after the other (two at once: test_two_scheduler_replicas_started_at_once...)
        stubs = [
            inventory_pb2_grpc.InventoryServiceStub(fleet.channel(name, start=True))
            for name in names
        ]
        pharmacy = Pharmacy(stubs[0], ids=lambda label: label)
        pharmacy.stock_site("s", "UTC", "S", request_id="s")
        product = pharmacy.product_id("privigen")
        for n in range(5):  # five lots expiring within 30 days: five LOT_EXPIRING events
            expiry = dt.date.today() + dt.timedelta(days=10 + n)
            pharmacy.receive("s", product, f"SOON-{n}", expiry, 2, via=stubs[n % 2])
        with ThreadPoolExecutor(4) as pool:  # both replicas, twice each, at once
            runs = list(
                pool.map(
                    lambda i: stubs[i % 2].RunExpiryCheck(inv.RunExpiryCheckRequest(site_id="s")),
                    range(4),
                )
            )
        assert sum(len(r.warnings) for r in runs) == 5  # each lot warned by exactly one run
        (rows,) = query(
            postgres_url, "SELECT count(*) FROM inventory_outbox WHERE topic = 'LOT_EXPIRING'"
        )
        assert rows[0] == 5
        notify = notify_pb2_grpc.NotifyServiceStub(fleet.channel("notify"))

        def notified() -> int:
            return len(notifications(notify, npb.TOPIC_LOT_EXPIRING))

        assert holds_within(lambda: notified() == 5)
        # the start-up check (one stored job, 20 s after the last replica started, which both
        # replicas' schedulers see) runs the same expiry check again: nothing new is raised
        assert holds_within(
            lambda: any("trigger: date[" in fleet.log(name) for name in names), 90
        ), "the start-up check never ran"
        time.sleep(3)  # both relays keep running: nothing more may arrive
        assert notified() == 5
        assert undelivered(postgres_url, "inventory_outbox") == 0
        fleet.assert_no_crashed_threads()
    finally:
        fleet.stop_all()


# --- scheduler -----------------------------------------------------------------------------------

PLANS = 12
CHAIRS = 4


def test_two_scheduler_replicas_raise_book_and_reserve_each_thing_once(
    postgres_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, tls=True)
    fleet.env.update(
        SCHEDULER_DATABASE_URL=postgres_url,
        INVENTORY_DATABASE_URL=f"sqlite:///{tmp_path / 'inventory.db'}",
        NOTIFY_DATABASE_URL=f"sqlite:///{tmp_path / 'notify.db'}",
        INVENTORY_ADDRESS=fleet.address("inventory"),
        NOTIFY_ADDRESS=fleet.address("notify"),
        SCHEDULER_JOBS_INTERVAL_SECONDS="1",
    )
    fleet.run("services.inventory", "seed")
    try:
        fleet.start("notify")
        fleet.start("inventory")
        load_notify(  # a console subscriber for every topic
            fleet.address("notify"), fleet.operator, tls=fleet.client_tls("notify")
        )
        # one after the other (two at once: test_two_scheduler_replicas_started_at_once...)
        replicas = [
            scheduler_pb2_grpc.SchedulerServiceStub(fleet.channel(name, start=True))
            for name in ("scheduler-1", "scheduler-2")
        ]
        stock = inventory_pb2_grpc.InventoryServiceStub(fleet.channel("inventory"))
        notify = notify_pb2_grpc.NotifyServiceStub(fleet.channel("notify"))
        clinic = Clinic.open(replicas[0], stock, chairs=CHAIRS)
        due = dt.date.today() + dt.timedelta(days=3)  # the window is open: due now
        plans = [clinic.add_plan(str(i), due, via=replicas[i % 2]) for i in range(PLANS)]

        # INFUSION_DUE: both replicas scan every second; one outbox row per plan
        def raised() -> Counter[str]:
            rows = query(
                postgres_url,
                "SELECT payload FROM scheduler_outbox WHERE topic = 'INFUSION_DUE'",
            )
            return Counter(
                (r[0] if isinstance(r[0], dict) else json.loads(r[0]))["payload"]["therapy_plan_id"]
                for r in rows
            )

        assert holds_within(lambda: len(raised()) == PLANS), raised()

        def notified() -> Counter[str]:
            return Counter(
                n.payload.infusion_due.therapy_plan_id
                for n in notifications(notify, npb.TOPIC_INFUSION_DUE)
            )

        assert holds_within(lambda: len(notified()) == PLANS), notified()

        # every client wants the same chair at the same minute, through both replicas at once
        def book(i: int, chair: str, day: Date, start: TimeOfDay, attempt: int) -> pb.Appointment:
            return (
                replicas[i % 2]
                .BookAppointment(
                    pb.BookAppointmentRequest(
                        request_id=f"book-{i}-{attempt}",
                        therapy_plan_id=plans[i].id,
                        chair_id=chair,
                        local_date=day,
                        local_start=start,
                    ),
                    timeout=30,
                )
                .appointment
            )

        def contend(i: int) -> str:
            try:
                book(i, clinic.chair_ids[0], pb_date(due), TimeOfDay(hours=8), 0)
            except grpc.RpcError as error:
                return error.code().name
            return "OK"

        with ThreadPoolExecutor(PLANS) as pool:
            first = Counter(pool.map(contend, range(PLANS)))
        assert first == {"OK": 1, "ABORTED": PLANS - 1}, first

        # the losers find another slot and book it, still racing each other
        def settle(i: int) -> int:
            for attempt in range(1, 40):
                if (
                    replicas[i % 2]
                    .ListAppointments(
                        pb.ListAppointmentsRequest(
                            patient_id=plans[i].patient_id, status=pb.APPOINTMENT_STATUS_BOOKED
                        )
                    )
                    .appointments
                ):
                    return attempt - 1
                slot = (
                    replicas[i % 2]
                    .FindSlots(pb.FindSlotsRequest(therapy_plan_id=plans[i].id), timeout=30)
                    .slots[0]
                )
                try:
                    book(i, slot.chair_id, slot.local_date, slot.local_start, attempt)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.ABORTED:
                        raise
            raise AssertionError(f"plan {i} never booked")

        with ThreadPoolExecutor(PLANS) as pool:
            lost = sum(pool.map(settle, range(PLANS)))
        print(f"lost races after the first round: {lost}")

        booked = query(
            postgres_url,
            "SELECT id, plan_id FROM appointments WHERE status = 'BOOKED'",
        )
        assert sorted(plan for _, plan in booked) == sorted(p.id for p in plans)
        overlapping = query(
            postgres_url,
            "SELECT a.id, b.id FROM appointments a JOIN appointments b"
            " ON a.chair_id = b.chair_id AND a.local_date = b.local_date AND a.id < b.id"
            " WHERE a.status IN ('PENDING', 'BOOKED') AND b.status IN ('PENDING', 'BOOKED')"
            " AND a.start_minute < b.end_minute AND b.start_minute < a.end_minute",
        )
        assert overlapping == []

        # each booking reserved once at the inventory: reservations, ledger, totals
        wanted = sorted(appointment for appointment, _ in booked)
        assert holds_within(
            lambda: sorted(r.appointment_id for r in clinic.reservations()) == wanted
        ), clinic.reservations()
        assert holds_within(lambda: undelivered(postgres_url, "scheduler_outbox") == 0)
        (stock_rows,) = query(
            postgres_url, "SELECT count(*) FROM scheduler_outbox WHERE topic = 'RESERVE_STOCK'"
        )
        assert stock_rows[0] == PLANS
        time.sleep(3)  # both relays and both job schedules keep running: nothing more may come
        assert sorted(r.appointment_id for r in clinic.reservations()) == wanted
        reserving = [m for m in clinic.movements() if m.kind == inv.MOVEMENT_KIND_RESERVATION]
        assert len(reserving) == PLANS
        assert sum(m.reserved_delta_vials for m in reserving) == PLANS * 7
        assert list(stock.ReconcileStock(inv.ReconcileStockRequest()).discrepancies) == []
        assert set(raised().values()) == {1} and len(raised()) == PLANS
        assert set(notified().values()) == {1} and len(notified()) == PLANS

        # the start-up forecast push (one stored job, 30 s after the last replica started,
        # seen by both schedulers): one DEMAND_FORECAST for the site's day, delivered
        def forecasts() -> list[Any]:
            return query(
                postgres_url,
                "SELECT dedupe_key, delivered_at FROM scheduler_outbox"
                " WHERE topic = 'DEMAND_FORECAST'",
            )

        assert holds_within(lambda: bool(forecasts()) and all(r[1] for r in forecasts()), 90)
        assert [r[0] for r in forecasts()] == [
            f"DEMAND_FORECAST:{clinic.site_id}:{dt.datetime.now(dt.UTC).date()}"
        ]
        # both replicas did run the jobs all along (so the "once" above was contested)
        for name in ("scheduler-1", "scheduler-2"):
            runs = fleet.log(name).count("interval[0:00:01]")
            assert runs > 10, (name, runs)
        fleet.assert_no_crashed_threads()
    finally:
        fleet.stop_all()


def test_two_scheduler_replicas_started_at_once_both_come_up(
    postgres_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, tls=True)
    fleet.env.update(SCHEDULER_DATABASE_URL=postgres_url, SCHEDULER_JOBS="0")
    try:
        for name in ("scheduler-1", "scheduler-2"):
            fleet.start(name, wait=False)
        up = {name: fleet.serving(name) for name in fleet.procs}
        assert up == {"scheduler-1": True, "scheduler-2": True}, {
            name: fleet.log(name)[-1500:] for name in fleet.procs
        }
    finally:
        fleet.stop_all()


# --- notify --------------------------------------------------------------------------------------

NOTIFICATIONS = 30


@dataclass
class WebhookSink:
    """A webhook receiver that records every POST: its Idempotency-Key and its JSON body."""

    url: str = ""
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self) -> Counter[str]:
        with self.lock:
            return Counter(key for key, _ in self.received)


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    state = WebhookSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.received.append((self.headers.get(IDEMPOTENCY_HEADER, ""), json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


class Stream:
    """A Subscribe stream read on a thread: the sequence and notification id of every event."""

    def __init__(self, stub: notify_pb2_grpc.NotifyServiceStub, after: int = 0) -> None:
        self.events: list[tuple[int, str]] = []
        self.call = stub.Subscribe(npb.SubscribeRequest(after_sequence=after))
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for item in self.call:
                if item.HasField("event"):
                    self.events.append((item.event.sequence, item.event.notification.id))
        except grpc.RpcError:
            pass  # cancelled at the end

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(10)


def _lot_expiring(n: int) -> npb.Payload:
    return npb.Payload(
        lot_expiring=npb.LotExpiringPayload(
            site_id="site-1",
            lot_id=f"lot-{n}",
            product_id="privigen",
            lot_number=f"LOT-{n}",
            expiry_date=Date(year=2027, month=1, day=1 + n % 28),
            days_left=26,
            threshold_days=30,
            on_hand_vials=12,
            reserved_vials=3,
        )
    )


def test_two_notify_replicas_deliver_each_notification_once_and_stream_alike(
    postgres_url: str, tmp_path: Path, sink: WebhookSink
) -> None:
    fleet = Fleet(tmp_path, tls=True)
    fleet.env.update(
        NOTIFY_DATABASE_URL=postgres_url,
        NOTIFY_HEARTBEAT_SECONDS="1",
        NOTIFY_DISPATCH_INTERVAL_SECONDS="0.5",
        NOTIFY_WEBHOOK_ALLOW_LIST="127.0.0.1",  # the local sink (loopback is refused otherwise)
    )
    streams: list[Stream] = []
    try:
        stubs = [
            notify_pb2_grpc.NotifyServiceStub(fleet.channel(name, start=True))
            for name in ("notify-1", "notify-2")  # one after the other: each migrates first
        ]
        subscriber = (
            stubs[0]
            .CreateSubscriber(
                npb.CreateSubscriberRequest(
                    request_id="sub",
                    subscriber=npb.Subscriber(
                        display_name="Pharmacy system",
                        kind=npb.SUBSCRIBER_KIND_STAFF,
                        time_zone="UTC",
                        webhook_url=sink.url,
                        webhook_secret="whsec-replicas",
                    ),
                )
            )
            .subscriber
        )
        streams = [Stream(stub) for stub in stubs]

        def publish(job: tuple[int, int, str]) -> npb.PublishResponse:
            n, replica, request_id = job
            return stubs[replica].Publish(
                npb.PublishRequest(
                    topic=npb.TOPIC_LOT_EXPIRING,
                    subscriber_ids=[subscriber.id],
                    payload=_lot_expiring(n),
                    dedupe_key=f"LOT_EXPIRING:lot-{n}",
                    request_id=request_id,
                ),
                timeout=30,
            )

        # each notification to one replica; a third of them repeated with the same request_id
        # and a third with the same dedupe key (a new request_id) to the other, all at once
        jobs = [(n, n % 2, f"pub-{n}") for n in range(NOTIFICATIONS)]
        jobs += [(n, 1 - n % 2, f"pub-{n}") for n in range(0, NOTIFICATIONS, 3)]
        jobs += [(n, 1 - n % 2, f"again-{n}") for n in range(1, NOTIFICATIONS, 3)]
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(publish, jobs))
        ids: dict[int, set[str]] = {}
        for (n, _, _), reply in zip(jobs, replies, strict=True):
            ids.setdefault(n, set()).add(reply.notification.id)
        assert all(len(found) == 1 for found in ids.values()), ids  # a repeat is the same one
        expected = {found.pop() for found in ids.values()}
        assert len(expected) == NOTIFICATIONS

        # every delivery reaches the webhook exactly once
        assert holds_within(lambda: len(sink.keys()) == NOTIFICATIONS), sink.keys()
        time.sleep(3)  # both dispatchers keep polling: no second send may follow
        keys = sink.keys()
        assert len(keys) == NOTIFICATIONS and set(keys.values()) == {1}, keys
        with sink.lock:
            bodies = [body for _, body in sink.received]
            assert all(key == body["delivery_id"] for key, body in sink.received)
        assert {b["notification_id"] for b in bodies} == expected
        for stub in stubs:
            listed = notifications(stub, npb.TOPIC_LOT_EXPIRING)
            assert {n.id for n in listed} == expected
            assert all(
                [d.status for d in n.deliveries] == [npb.DELIVERY_STATUS_DELIVERED]
                and len(n.deliveries[0].attempts) == 1
                for n in listed
            )

        # the event log: one PUBLISHED event per notification, the same on both replicas
        assert holds_within(lambda: all(len(s.events) >= NOTIFICATIONS for s in streams)), [
            len(s.events) for s in streams
        ]
        time.sleep(1.5)  # a stream that would repeat an event gets the chance to
        logged = [
            (int(seq), nid)
            for seq, nid in query(
                postgres_url,
                # the stream's order: the place each event got after its commit (stream_seq)
                "SELECT stream_seq, notification_id FROM notify_events ORDER BY stream_seq",
            )
        ]
        for stream in streams:
            assert stream.events == logged
        sequences = [seq for seq, _ in logged]
        assert sequences == list(range(sequences[0], sequences[0] + NOTIFICATIONS))  # no gaps
        assert {nid for _, nid in logged} == expected
        # resuming on the other replica from the middle gives exactly the rest
        middle = sequences[NOTIFICATIONS // 2 - 1]
        resumed = Stream(stubs[1], after=middle)
        streams.append(resumed)
        assert holds_within(lambda: len(resumed.events) >= NOTIFICATIONS - NOTIFICATIONS // 2)
        time.sleep(1.5)
        assert resumed.events == logged[NOTIFICATIONS // 2 :]
        fleet.assert_no_crashed_threads()
    finally:
        for stream in streams:
            stream.close()
        fleet.stop_all()
