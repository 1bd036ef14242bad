"""Subscribe: replay from a cursor then live events, no gap and no duplicate across a
reconnect, filters, heartbeats, and bad requests. Real gRPC, both databases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from infusion.notify.v1 import notify_pb2 as pb
from services.notify.store import events

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.notify_conftest import (  # noqa: E402
    NOW,
    NotifyServer,
    create,
    lot_expiring,
    publish,
    reminder,
    rid,
)

pytest_plugins = ["tests.integration.notify_conftest"]

EVENT = pb.NotificationEvent


def _events(stream: Iterator[pb.SubscribeResponse], count: int) -> list[pb.NotificationEvent]:
    found = []
    for item in stream:
        if item.HasField("event"):
            found.append(item.event)
            if len(found) == count:
                break
    return found


def test_reconnect_with_the_cursor_has_no_gap_and_no_duplicate(
    notify_server: NotifyServer,
) -> None:
    s = create(notify_server)
    published = [
        publish(
            notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(lot=f"L{i}"), [s.id]
        ).notification.id
        for i in range(5)
    ]
    first = notify_server.stub.Subscribe(pb.SubscribeRequest(), timeout=20)
    seen = _events(first, 3)
    first.cancel()  # the client goes away mid-stream
    assert [e.notification.id for e in seen] == published[:3]
    cursor = seen[-1].sequence
    second = notify_server.stub.Subscribe(pb.SubscribeRequest(after_sequence=cursor), timeout=20)
    replayed = _events(second, 2)
    live_ids = [
        publish(
            notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(lot=f"M{i}"), [s.id]
        ).notification.id
        for i in range(2)
    ]
    live = _events(second, 2)
    second.cancel()
    everything = seen + replayed + live
    assert [e.notification.id for e in everything] == published + live_ids
    sequences = [e.sequence for e in everything]
    assert sequences == sorted(set(sequences))  # increasing, no duplicate
    assert all(e.kind == EVENT.KIND_PUBLISHED for e in everything)
    assert everything[0].notification.payload.lot_expiring.lot_number == "L0"


def test_concurrent_publishers_never_make_a_stream_skip_or_repeat(
    notify_server: NotifyServer,
) -> None:
    """Events are placed in the stream after their transactions commit, in any order: a stream
    reading while four threads publish still gets each event once, in increasing sequence."""
    s = create(notify_server)
    stream = notify_server.stub.Subscribe(pb.SubscribeRequest(), timeout=30)
    received: list[pb.NotificationEvent] = []
    reader = threading.Thread(target=lambda: received.extend(_events(stream, 40)))
    reader.start()

    def one(i: int) -> str:
        payload = lot_expiring(lot=f"C{i}")
        return publish(notify_server, pb.TOPIC_LOT_EXPIRING, payload, [s.id]).notification.id

    with ThreadPoolExecutor(4) as pool:
        published = list(pool.map(one, range(40)))
    reader.join(timeout=30)
    stream.cancel()
    assert sorted(e.notification.id for e in received) == sorted(published)
    sequences = [e.sequence for e in received]
    assert sequences == sorted(set(sequences))


def test_an_event_committed_late_is_placed_after_every_event_read(
    notify_server: NotifyServer,
) -> None:
    """The event written first but committed last comes after the one already read: numbered
    as written, a reader would have moved past it."""
    db = notify_server.app.db
    if db.dialect != "postgresql":
        pytest.skip("SQLite's write lock never lets two writers overlap")
    s = create(notify_server)
    nid = publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id]).notification.id
    log = notify_server.app.api.events
    cursor = log.last_sequence()
    with db.write() as late:
        events.append(late, nid, "LOT_EXPIRING", "PUBLISHED", NOW)  # written first...
        with db.write() as early:
            events.append(early, nid, "LOT_EXPIRING", "CANCELLED", NOW)
        log.place()
        assert [e.kind for e in log.after(cursor, 10)] == ["CANCELLED"]
    log.place()  # ...committed last
    placed = log.after(cursor, 10)
    assert [e.kind for e in placed] == ["CANCELLED", "PUBLISHED"]
    assert placed[0].seq < placed[1].seq


def test_filters_and_cancel_events(notify_server: NotifyServer) -> None:
    alice = create(notify_server, external_ref="alice")
    bob = create(notify_server, external_ref="bob")
    publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(site="site-1"), [alice.id])
    wanted = publish(
        notify_server, pb.TOPIC_APPOINTMENT_REMINDER, reminder(NOW, site="site-2"), [bob.id]
    ).notification
    publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(site="site-2"), [alice.id])
    notify_server.stub.CancelNotification(
        pb.CancelNotificationRequest(id=wanted.id, request_id=rid())
    )
    for request in (
        pb.SubscribeRequest(topics=[pb.TOPIC_APPOINTMENT_REMINDER]),
        pb.SubscribeRequest(subscriber_ids=[bob.id]),
        pb.SubscribeRequest(site_id="site-2", topics=[pb.TOPIC_APPOINTMENT_REMINDER]),
    ):
        stream = notify_server.stub.Subscribe(request, timeout=20)
        got = _events(stream, 2)
        stream.cancel()
        assert [(e.kind, e.notification.id) for e in got] == [
            (EVENT.KIND_PUBLISHED, wanted.id),
            (EVENT.KIND_CANCELLED, wanted.id),
        ]
        assert got[1].notification.HasField("cancel_time")


def test_heartbeats_carry_the_cursor(notify_server: NotifyServer) -> None:
    s = create(notify_server)
    publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id])
    stream = notify_server.stub.Subscribe(
        pb.SubscribeRequest(topics=[pb.TOPIC_LOW_STOCK]), timeout=20
    )
    beat = next(item for item in stream if item.HasField("heartbeat")).heartbeat
    stream.cancel()
    assert beat.sequence >= 1  # scanned past the LOT_EXPIRING event it filtered out
    assert beat.time.ToDatetime().year == NOW.year


def test_bad_subscribe_requests(notify_server: NotifyServer) -> None:
    for request in (
        pb.SubscribeRequest(topics=[99]),  # type: ignore[list-item]
        pb.SubscribeRequest(after_sequence=-1),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            list(notify_server.stub.Subscribe(request, timeout=5))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_event_a_stopped_writer_left_unplaced_is_placed_by_the_next_poll(
    notify_server: NotifyServer,
) -> None:
    """A process killed between its commit and its event's placement leaves the event
    unplaced; the stream watcher's poll places it, without waiting for another Publish."""
    s = create(notify_server)
    nid = publish(notify_server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id]).notification.id
    log = notify_server.app.api.events
    cursor = log.last_sequence()
    with notify_server.app.db.write() as session:  # committed, never placed: the writer died
        events.append(session, nid, "LOT_EXPIRING", "CANCELLED", NOW)
    assert log.after(cursor, 10) == []
    assert log.poll() == cursor + 1
    assert [e.kind for e in log.after(cursor, 10)] == ["CANCELLED"]
    assert log.poll() == cursor + 1  # nothing left: a read, no new place
