"""services.common.outbox_relay on both databases: rows delivered in order and marked, failures
counted with backoff on the injected clock, a cap on attempts, no double delivery between two
relays on PostgreSQL (SKIP LOCKED), concurrent delivery (deliveries overlap; rows of one order key
in sequence, a failed row holding back only the later rows of its key; the caller and the rows'
trace parents in the worker threads; no thread left after a stop), the scheduler's order keys,
and the inventory -> notify path end to end: outbox rows
written the way the inventory writes them, carried by the relay to notify's Publish over gRPC
with the row id as request_id (a repeat is a no-op).

``publish_request`` is the inventory's translation (services/inventory/adapters/notify_relay.py).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Hashable, Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import MetaData, Table, event, select, update

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc
from services.common import tracing
from services.common.clock import FixedClock
from services.common.db import Database
from services.common.identity import current_caller, service_caller
from services.common.outbox import Outbox, OutgoingEvent, define_outbox_table
from services.common.outbox_relay import (
    DEAD_LETTER_ATTEMPTS,
    OutboxRelay,
    PermanentFailure,
    RelayPolicy,
    RelayRound,
    no_order,
    publish_or_dead_letter,
)
from services.inventory.adapters.notify_relay import publish_request
from services.scheduler.adapters.inventory_relay import STOCK_CHAIN
from services.scheduler.adapters.notify_relay import chain_key as scheduler_chain
from services.scheduler.adapters.notify_relay import order_key as scheduler_order

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.notify_conftest import NOW, NotifyServer, create  # noqa: E402
from tests.integration.spans import PROVIDER, SPANS  # noqa: E402

pytest_plugins = ["tests.integration.notify_conftest"]


# --- fixtures -------------------------------------------------------------------------------------


class _Outbox:
    def __init__(self, db: Database, table: Table, clock: FixedClock) -> None:
        self.db, self.table, self.clock = db, table, clock
        self.outbox = Outbox(table)

    def emit(self, topic: str, payload: dict[str, Any], key: str | None = None) -> None:
        with self.db.write() as session:
            self.outbox.emit(session, topic, payload, self.clock.now(), key)

    def rows(self) -> list[Any]:
        with self.db.read() as session:
            return list(session.execute(select(self.table).order_by(self.table.c.seq)))


@pytest.fixture
def outbox(database_url: str) -> Iterator[_Outbox]:
    db = Database(database_url)
    metadata = MetaData()
    table = define_outbox_table(metadata, "inventory")
    metadata.create_all(db.engine)
    try:
        yield _Outbox(db, table, FixedClock(NOW))
    finally:
        db.dispose()


def _relay(
    o: _Outbox, deliver: Any, order_key: Any = None, chain_key: Any = None, **policy: Any
) -> OutboxRelay:
    return OutboxRelay(
        o.db,
        o.table,
        deliver,
        o.clock,
        RelayPolicy(retry_base=dt.timedelta(seconds=10), **policy),
        caller=service_caller("inventory"),
        order_key=order_key or no_order,
        chain_key=chain_key,
        jitter=lambda: 1.0,
        name="test-relay",
    )


def _by_k(event: OutgoingEvent) -> Hashable | None:
    """The tests' order key: the payload's ``k``."""
    key: Hashable | None = event.payload.get("k")
    return key


def _relay_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("test-relay")]


# --- the relay ------------------------------------------------------------------------------------


def test_rows_are_delivered_in_order_and_marked(outbox: _Outbox) -> None:
    """concurrency=1: as before concurrent delivery, every row in the round's own thread, in
    sequence order."""
    for i in range(5):
        outbox.emit("LOW_STOCK", {"site_id": "s1", "n": i}, key=f"k{i}")
    got: list[OutgoingEvent] = []
    threads: set[threading.Thread] = set()

    def deliver(event: OutgoingEvent) -> None:
        threads.add(threading.current_thread())
        got.append(event)

    relay = _relay(outbox, deliver, batch_size=2, concurrency=1)
    assert relay.drain().delivered == 5
    assert [e.payload["n"] for e in got] == [0, 1, 2, 3, 4]
    assert threads == {threading.current_thread()}
    assert all(r.delivered_at == NOW for r in outbox.rows())
    assert relay.run_once().delivered == 0  # nothing twice
    assert _relay_threads() == []


def test_deliveries_overlap(outbox: _Outbox) -> None:
    """Eight rows, four at a time: a deliver that waits for three others completes the round
    (one after another, the first would time out on the barrier and fail)."""
    for i in range(8):
        outbox.emit("LOW_STOCK", {"n": i})
    barrier = threading.Barrier(4, timeout=10)
    relay = _relay(outbox, lambda e: barrier.wait(), concurrency=4)
    r = relay.run_once()
    assert (r.delivered, r.failed, r.held) == (8, 0, 0)
    assert all(row.delivered_at == NOW for row in outbox.rows())
    assert _relay_threads() == []  # the round's own pool is gone with the call


@pytest.mark.parametrize("concurrency", [1, 4])
def test_rows_of_one_key_keep_their_order(outbox: _Outbox, concurrency: int) -> None:
    """60 rows of 5 keys interleaved, each delivery taking 0-3 ms at random: every key's rows
    arrive in sequence order."""
    for n in range(60):
        outbox.emit("LOW_STOCK", {"n": n, "k": f"a-{n % 5}"})
    delays = random.Random(7)
    pauses = {n: delays.uniform(0, 0.003) for n in range(60)}
    got: list[tuple[str, int]] = []
    lock = threading.Lock()

    def deliver(event: OutgoingEvent) -> None:
        time.sleep(pauses[event.payload["n"]])  # shuffles the workers, asserts no timing
        with lock:
            got.append((event.payload["k"], event.payload["n"]))

    relay = _relay(outbox, deliver, _by_k, batch_size=25, concurrency=concurrency)
    assert relay.drain().delivered == 60
    for k in range(5):
        assert [n for key, n in got if key == f"a-{k}"] == list(range(k, 60, 5))


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_failed_row_holds_back_only_the_later_rows_of_its_key(
    outbox: _Outbox, concurrency: int
) -> None:
    """Key a: row 1 fails once; rows 2 and (written later) 7 wait, untried, until it has gone,
    then follow it in order. Key b: row 3 is refused for good (dead-lettered), which holds
    nothing back; rows without a key and of other keys go at once."""
    rows = [("a", 0), ("a", 1), ("a", 2), ("b", 3), ("b", 4), (None, 5), ("c", 6)]
    for k, n in rows:
        outbox.emit("LOW_STOCK", {"n": n, "k": k})
    fail = {1: 1}
    got: list[int] = []
    lock = threading.Lock()

    def deliver(event: OutgoingEvent) -> None:
        n = event.payload["n"]
        if n == 3:
            raise PermanentFailure("INVALID_ARGUMENT: no such site")
        if fail.get(n):
            fail[n] -= 1
            raise ConnectionError("inventory unavailable")
        with lock:
            got.append(n)

    relay = _relay(outbox, deliver, _by_k, concurrency=concurrency)
    r = relay.run_once()
    assert (r.delivered, r.failed, r.held) == (4, 2, 1)
    assert sorted(got) == [0, 4, 5, 6]
    state = {row.payload["n"]: row for row in outbox.rows()}
    assert state[1].attempts == 1 and "inventory unavailable" in state[1].last_error
    assert state[3].attempts == DEAD_LETTER_ATTEMPTS
    held = state[2]
    assert (held.attempts, held.last_error, held.delivered_at) == (0, "", None)  # untried
    # row 1 backs off (10 s): its key's rows wait, a row written since with them
    outbox.emit("LOW_STOCK", {"n": 7, "k": "a"})
    outbox.emit("LOW_STOCK", {"n": 8, "k": "b"})
    r = relay.run_once()
    assert (r.delivered, r.failed, r.held) == (1, 0, 1)  # 8 goes; 7 is held (2 not claimed)
    assert relay.run_once() == RelayRound(0, 0, 0)  # the held rows are not claimed again meanwhile
    outbox.clock.advance(dt.timedelta(seconds=10))
    got.clear()
    r = relay.run_once()
    assert (r.delivered, r.failed, r.held) == (3, 0, 0)
    assert got == [1, 2, 7]
    assert [row.attempts for row in outbox.rows() if row.payload["k"] == "a"] == [0, 1, 0, 0]


def test_one_chain_keeps_its_rows_in_order_and_a_failure_holds_back_only_its_key(
    outbox: _Outbox,
) -> None:
    """The scheduler's stock rows: one chain (delivered in the order written, whatever the
    concurrency: the booking made first reserves first), each appointment its own order key
    (a failing row holds back its appointment's later rows, not the others'). Rows outside the
    chain go beside it."""
    rows = [("a", 0), ("b", 1), ("a", 2), ("c", 3), (None, 4), ("b", 5)]
    for k, n in rows:
        outbox.emit("RESERVE_STOCK" if k else "LOW_STOCK", {"n": n, "k": k})
    fail = {0: 1}
    chained: list[int] = []
    lock = threading.Lock()

    def deliver(event: OutgoingEvent) -> None:
        n = event.payload["n"]
        if fail.get(n):
            fail[n] -= 1
            raise ConnectionError("inventory unavailable")
        if event.payload["k"] is not None:
            time.sleep(0.002 * (5 - n))  # earlier rows slower: a race would reorder them
            with lock:
                chained.append(n)

    def stock(event: OutgoingEvent) -> Hashable | None:
        return "stock" if event.payload["k"] is not None else None

    relay = _relay(outbox, deliver, _by_k, stock, concurrency=4)
    r = relay.run_once()
    assert (r.delivered, r.failed, r.held) == (4, 1, 1)
    assert chained == [1, 3, 5]  # in the order written; a's row 2 waits behind row 0
    outbox.clock.advance(dt.timedelta(seconds=10))
    chained.clear()
    assert relay.run_once().delivered == 2
    assert chained == [0, 2]


def test_workers_act_as_the_caller_and_trace_each_row_under_its_writer(
    outbox: _Outbox,
) -> None:
    """The background rounds run as the relay's caller: so does each delivery in the pool's
    threads. Each row's span is a child of the row's traceparent, whichever thread sends it."""
    parents = {n: f"00-{n + 1:032x}-{n + 1:016x}-01" for n in range(8)}
    for n in range(8):
        outbox.emit("LOW_STOCK", {"n": n})
    with outbox.db.write() as session:
        t = outbox.table
        for n, parent in parents.items():
            session.execute(update(t).where(t.c.seq == n + 1).values(traceparent=parent))
    seen: dict[int, tuple[str, str]] = {}
    done = threading.Event()

    barrier = threading.Barrier(4, timeout=10)  # four threads at a time

    def deliver(event: OutgoingEvent) -> None:
        seen[event.payload["n"]] = (current_caller().subject, threading.current_thread().name)
        barrier.wait()
        if len(seen) == 8:
            done.set()

    tracing.install(PROVIDER)
    SPANS.clear()
    relay = _relay(outbox, deliver, concurrency=4, interval_seconds=0.05)
    try:
        relay.start()
        assert done.wait(10)
    finally:
        relay.stop()
        tracing.uninstall()
    assert {who for who, _ in seen.values()} == {"inventory"}
    assert all(thread.startswith("test-relay-") for _, thread in seen.values())
    assert len({thread for _, thread in seen.values()}) == 4
    delivered = [s for s in SPANS.get_finished_spans() if s.name == "outbox LOW_STOCK"]
    assert len(delivered) == 8
    numbers = {row.id: row.payload["n"] for row in outbox.rows()}
    for span in delivered:
        n = numbers[str((span.attributes or {})["outbox.row_id"])]
        assert span.parent is not None and span.parent.span_id == n + 1
        assert span.context is not None and span.context.trace_id == n + 1
    assert _relay_threads() == []  # the loop's thread and the pool's are gone


def _scheduler_row(topic: str, payload: dict[str, Any], key: str = "") -> OutgoingEvent:
    return OutgoingEvent(1, "id", topic, key, {"payload": payload}, NOW, None)


def test_the_scheduler_keeps_an_appointments_stock_commands_and_a_reminders_cancel_in_order() -> (
    None
):
    stock = [
        _scheduler_row(topic, {"appointment_id": "a-1", "site_id": "s"})
        for topic in ("RESERVE_STOCK", "AMEND_RESERVATION", "RELEASE_RESERVATION", "DISPENSE")
    ]
    keys = {scheduler_order(e) for e in stock}
    assert len(keys) == 1 and None not in keys
    other = _scheduler_row("RELEASE_RESERVATION", {"appointment_id": "a-2"})
    assert scheduler_order(other) not in keys
    home = _scheduler_row("HOME_DISPENSE", {"appointment_id": "h-1", "home_infusion_id": "h-1"})
    assert scheduler_order(home) is not None
    forecast = [
        _scheduler_row("DEMAND_FORECAST", {"forecasts": [{"site_id": site, "day": day}]})
        for site, day in (("s1", "2026-12-05"), ("s1", "2026-12-06"), ("s2", "2026-12-05"))
    ]
    assert scheduler_order(forecast[0]) == scheduler_order(forecast[1])
    assert scheduler_order(forecast[0]) != scheduler_order(forecast[2])
    # every stock row in one chain: of two bookings competing for the same vials the one made
    # first reserves first
    assert {scheduler_chain(e) for e in [*stock, other, home, *forecast]} == {STOCK_CHAIN}
    reminder_key = "APPOINTMENT_REMINDER:a-1:72h:20261207T090000Z"
    reminder = _scheduler_row("APPOINTMENT_REMINDER", {"appointment_id": "a-1"}, reminder_key)
    cancel = _scheduler_row("CANCEL_NOTIFICATION", {"dedupe_key": reminder_key})
    assert scheduler_order(reminder) == scheduler_order(cancel) is not None
    assert scheduler_order(_scheduler_row("STOCK_AT_RISK", {"appointment_id": "a-1"})) is None
    assert scheduler_order(_scheduler_row("INFUSION_DUE", {"plan_id": "p"})) is None
    assert scheduler_chain(reminder) == scheduler_chain(cancel) == scheduler_order(reminder)
    assert scheduler_chain(_scheduler_row("INFUSION_DUE", {"plan_id": "p"})) is None


def test_failures_back_off_on_the_clock_and_do_not_block_later_rows(outbox: _Outbox) -> None:
    outbox.emit("LOT_EXPIRING", {"n": 0})
    outbox.emit("LOT_EXPIRING", {"n": 1})
    failures = {0: 2}  # row 0 fails twice
    got: list[int] = []

    def deliver(event: OutgoingEvent) -> None:
        n = event.payload["n"]
        if failures.get(n, 0) > 0:
            failures[n] -= 1
            raise ConnectionError("notify unavailable")
        got.append(n)

    relay = _relay(outbox, deliver)
    r = relay.run_once()
    assert (r.delivered, r.failed) == (1, 1) and got == [1]
    first = outbox.rows()[0]
    assert first.attempts == 1 and "notify unavailable" in first.last_error
    assert first.delivered_at is None
    assert relay.run_once().failed == 0  # backing off: not tried again yet
    outbox.clock.advance(dt.timedelta(seconds=10))
    assert relay.run_once().failed == 1  # second failure: now 20 s
    outbox.clock.advance(dt.timedelta(seconds=19))
    assert relay.run_once().failed == 0
    outbox.clock.advance(dt.timedelta(seconds=1))
    assert relay.run_once().delivered == 1
    assert got == [1, 0]
    assert [r.attempts for r in outbox.rows()] == [2, 0]


def test_a_round_writes_its_outcomes_together(outbox: _Outbox) -> None:
    """A round of 40 rows: delivered, failed (two already failed once) and refused. Each
    outcome lands on its own row; on PostgreSQL the round sends its claiming SELECT and one
    statement of outcomes, however many rows it tried (a statement per row before)."""
    for n in range(40):
        outbox.emit("LOW_STOCK", {"n": n})
    with outbox.db.write() as session:  # rows 1 and 2 have failed once already
        t = outbox.table
        session.execute(update(t).where(t.c.seq.in_([2, 3])).values(attempts=1))

    def deliver(event: OutgoingEvent) -> None:
        n = event.payload["n"]
        if n in (1, 2, 5):
            raise ConnectionError(f"notify unavailable for {n}")
        if n == 7:
            raise PermanentFailure("INVALID_ARGUMENT: no such site")

    relay = _relay(outbox, deliver)
    sent: list[str] = []
    listen = (outbox.db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    event.listen(*listen)
    try:
        r = relay.run_once()
    finally:
        event.remove(*listen)
    assert (r.delivered, r.failed) == (36, 4)
    rows = {row.payload["n"]: row for row in outbox.rows()}
    assert {n for n, row in rows.items() if row.delivered_at is None} == {1, 2, 5, 7}
    assert all(rows[n].delivered_at == NOW for n in rows if n not in (1, 2, 5, 7))
    assert [rows[n].attempts for n in (1, 2, 5)] == [2, 2, 1]
    assert rows[5].last_error == "ConnectionError: notify unavailable for 5"
    assert rows[7].attempts == DEAD_LETTER_ATTEMPTS
    assert rows[7].last_error.startswith("dead-lettered: INVALID_ARGUMENT")
    if outbox.db.dialect == "postgresql":
        assert len([s for s in sent if not s.startswith("BEGIN")]) == 2
    # each row backs off from its own attempts: 10 s for row 5, 20 s for rows 1 and 2
    outbox.clock.advance(dt.timedelta(seconds=10))
    assert relay.run_once().failed == 1  # row 5; the refused row is never tried again
    outbox.clock.advance(dt.timedelta(seconds=10))
    assert relay.run_once().failed == 2  # rows 1 and 2


def test_max_attempts_leaves_a_row_alone(outbox: _Outbox) -> None:
    outbox.emit("LOW_STOCK", {"n": 0})

    def deliver(event: OutgoingEvent) -> None:
        raise RuntimeError("poison")

    relay = _relay(outbox, deliver, max_attempts=2)
    for _ in range(4):
        relay.run_once()
        outbox.clock.advance(dt.timedelta(hours=1))
    (row,) = outbox.rows()
    assert row.attempts == 2 and row.delivered_at is None and "poison" in row.last_error


@pytest.mark.postgres
def test_two_relays_on_postgresql_never_deliver_a_row_twice(postgres_url: str) -> None:
    db = Database(postgres_url)
    metadata = MetaData()
    table = define_outbox_table(metadata, "inventory")
    metadata.create_all(db.engine)
    o = _Outbox(db, table, FixedClock(NOW))
    try:
        for i in range(40):
            o.emit("LOW_STOCK", {"n": i})
        seen: list[int] = []
        lock = threading.Lock()

        def deliver(event: OutgoingEvent) -> None:
            time.sleep(0.002)  # a slow receiver widens the race window
            with lock:
                seen.append(event.payload["n"])

        relays = [_relay(o, deliver, batch_size=5) for _ in range(2)]
        threads = [threading.Thread(target=r.drain) for r in relays]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(seen) == list(range(40))  # each exactly once
    finally:
        db.dispose()


# --- inventory outbox -> notify Publish over gRPC ----------------------------------------------


INVENTORY_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "REORDER_DUE",
        {
            "site_id": "site-1",
            "product_id": "p-1",
            "product_code": "privigen",
            "brand": "Privigen",
            "as_of": "2026-11-24",
            "presentation_grams": "10",
            "vials": 12,
            "grams": "120",
            "estimated_cost": {"amount": "5400.50", "currency": "GBP"},
            "stockout_date": None,
            "order_by_date": "2026-12-03",
            "reason": "4 weeks of demand",
        },
        "REORDER_DUE:site-1:p-1:2026-11-24",
    ),
    (
        "LOT_RECALLED",
        {
            "product_id": "p-1",
            "brand": "Privigen",
            "lot_number": "P123",
            "reason": "particulates",
            "sites": ["site-1"],
            "recipients": [
                {
                    "patient_id": "pt-1",
                    "appointment_id": "a-1",
                    "site_id": "site-1",
                    "administered_time": "2026-11-01T10:00:00+00:00",
                    "grams": "30",
                }
            ],
        },
        "LOT_RECALLED:p-1:P123",
    ),
    (
        "STOCK_AT_RISK",
        {
            "reservation_id": "r-1",
            "appointment_id": "a-1",
            "patient_id": "pt-1",
            "site_id": "site-2",
            "product_id": "p-1",
            "grams": "30",
            "needed_on": "2026-11-30",
            "reason": "no stock",
            "cause": "RECALLED",
        },
        "STOCK_AT_RISK:r-1:2",
    ),
]


def test_inventory_events_reach_notify_once(outbox: _Outbox, notify_server: NotifyServer) -> None:
    channels = [pb.CHANNEL_CONSOLE]
    pharmacist = create(
        notify_server,
        external_ref="pharmacy-site-1",
        site_ids=["site-1"],
        preferences=[
            pb.Preference(topic=pb.TOPIC_REORDER_DUE, channels=channels),
            pb.Preference(topic=pb.TOPIC_LOT_RECALLED, channels=channels),
            pb.Preference(topic=pb.TOPIC_STOCK_AT_RISK, channels=channels),
        ],
    )
    for topic, payload, key in INVENTORY_EVENTS:
        outbox.emit(topic, payload, key)
    stub = notify_pb2_grpc.NotifyServiceStub(notify_server.channel)
    replies: dict[int, pb.PublishResponse] = {}  # by seq: the relay sends them at once

    def deliver(event: OutgoingEvent) -> None:
        replies[event.seq] = stub.Publish(publish_request(event), timeout=10)

    relay = _relay(outbox, deliver)
    assert relay.drain().delivered == 3
    reorder, recall, at_risk = (replies[seq].notification for seq in sorted(replies))
    assert reorder.payload.reorder_due.estimated_cost.units == 5400
    assert reorder.payload.reorder_due.estimated_cost.nanos == 500_000_000
    assert not reorder.payload.reorder_due.HasField("stockout_date")
    assert recall.payload.lot_recalled.recipients[0].administered_time.seconds > 0
    # the site-1 pharmacist gets the site-1 events, not the site-2 one
    assert [d.subscriber_id for d in reorder.deliveries] == [pharmacist.id]
    assert [d.subscriber_id for d in recall.deliveries] == [pharmacist.id]
    assert list(at_risk.deliveries) == []
    # a crash after Publish but before delivered_at was written: the row goes again, and the
    # row id as request_id returns the first notification instead of a second one
    events = [
        OutgoingEvent(r.seq, r.id, r.topic, r.dedupe_key or "", r.payload, r.created_at, None)
        for r in outbox.rows()
    ]
    again = stub.Publish(publish_request(events[0]), timeout=10)
    assert again == replies[events[0].seq]
    listed = stub.ListNotifications(pb.ListNotificationsRequest()).notifications
    assert len(listed) == 3
    assert notify_server.run_once() == 2


def test_notify_refusing_an_event_counts_as_a_failure(
    outbox: _Outbox, notify_server: NotifyServer
) -> None:
    outbox.emit("LOT_EXPIRING", {"site_id": "s", "lot_number": ""}, "bad")  # template needs it
    stub = notify_pb2_grpc.NotifyServiceStub(notify_server.channel)
    relay = _relay(
        outbox,
        lambda e: publish_or_dead_letter(lambda: stub.Publish(publish_request(e), timeout=10)),
    )
    assert relay.run_once().failed == 1
    (row,) = outbox.rows()
    # INVALID_ARGUMENT will not change on a retry: the row is dead-lettered, not retried
    assert row.attempts == DEAD_LETTER_ATTEMPTS and "INVALID_ARGUMENT" in row.last_error
    assert row.delivered_at is None
    outbox.clock.advance(dt.timedelta(hours=1))
    assert relay.run_once().failed == 0


def test_an_outage_is_retried_not_dead_lettered(outbox: _Outbox) -> None:
    outbox.emit("LOW_STOCK", {"site_id": "s1"}, key="k")

    class Down(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return "connection refused"

    def deliver(_: OutgoingEvent) -> None:
        def call() -> None:
            raise Down()

        publish_or_dead_letter(call)

    relay = _relay(outbox, deliver)
    assert relay.run_once().failed == 1
    (row,) = outbox.rows()
    assert row.attempts == 1 and "Down" in row.last_error
