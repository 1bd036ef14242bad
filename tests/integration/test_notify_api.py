"""Every NotifyService RPC over real gRPC on SQLite and PostgreSQL: subscribers, Publish,
Cancel, Get/List, delivery with retries and dead-lettering (recording adapters; the real
SMTP/HTTP adapters are in test_notify_channels.py), idempotent retries and error paths."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import timeofday_pb2

from infusion.notify.v1 import notify_pb2 as pb
from services.common.convert import from_datetime
from services.notify.adapters.channels import PermanentFailure, TemporaryFailure
from services.notify.domain.model import Channel
from services.notify.store.publishing import TOGETHER
from tests.integration.errors import error_metadata, error_reason, field_violations

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.notify_conftest import (  # noqa: E402
    NOW,
    Factory,
    NotifyServer,
    config,
    create,
    lot_expiring,
    publish,
    reminder,
    rid,
    subscriber,
)

pytest_plugins = ["tests.integration.notify_conftest"]

LOT_EXPIRING = pb.TOPIC_LOT_EXPIRING
DELIVERED = pb.DELIVERY_STATUS_DELIVERED


def _status(server: NotifyServer, notification_id: str) -> list[int]:
    n = server.stub.GetNotification(pb.GetNotificationRequest(id=notification_id)).notification
    return [d.status for d in n.deliveries]


def _count(server: NotifyServer) -> int:
    return len(
        server.stub.ListNotifications(pb.ListNotificationsRequest(page_size=500)).notifications
    )


# --- subscribers ---------------------------------------------------------------------------------


def test_create_get_and_idempotent_retry(notify_server: NotifyServer) -> None:
    request = pb.CreateSubscriberRequest(
        subscriber=subscriber(
            phone="+44 7911 123456",
            webhook_url="https://hooks.example.org/notify",
            webhook_secret="shh",
            preferences=[pb.Preference(topic=LOT_EXPIRING, channels=[pb.CHANNEL_EMAIL])],
            quiet_hours=pb.QuietHours(
                start=timeofday_pb2.TimeOfDay(hours=22), end=timeofday_pb2.TimeOfDay(hours=7)
            ),
            site_ids=["site-1"],
        ),
        request_id=rid(),
    )
    first = notify_server.stub.CreateSubscriber(request).subscriber
    again = notify_server.stub.CreateSubscriber(request).subscriber
    assert first == again
    assert first.phone == "+447911123456"
    assert first.webhook_secret == "" and first.webhook_secret_set
    assert first.etag == 'W/"1"'
    got = notify_server.stub.GetSubscriber(pb.GetSubscriberRequest(id=first.id)).subscriber
    assert got == first
    listed = notify_server.stub.ListSubscribers(pb.ListSubscribersRequest()).subscribers
    assert [s.id for s in listed] == [first.id]
    # the same request_id for a different request is refused
    other = pb.CreateSubscriberRequest()
    other.CopyFrom(request)
    other.subscriber.display_name = "Someone else"
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.CreateSubscriber(other)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["request_id"]


def test_bad_contact_points_are_all_reported_and_nothing_is_written(
    notify_server: NotifyServer,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        create(
            notify_server,
            email="nobody-at-example",
            phone="12345",
            webhook_url="ftp://example.org/x",
            webhook_secret="s",
            time_zone="Europe/Atlantis",
            preferences=[pb.Preference(topic=pb.TOPIC_LOT_RECALLED, channels=[])],
            kind=pb.SUBSCRIBER_KIND_UNSPECIFIED,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {
        "subscriber.kind",
        "subscriber.email",
        "subscriber.phone",
        "subscriber.webhook_url",
        "subscriber.time_zone",
        "subscriber.preferences[0].channels",
    }
    assert notify_server.stub.ListSubscribers(pb.ListSubscribersRequest()).subscribers == []


def test_get_unknown_and_missing_ids(notify_server: NotifyServer) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.GetSubscriber(pb.GetSubscriberRequest(id="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.GetSubscriber(pb.GetSubscriberRequest())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_pages_and_filters(notify_server: NotifyServer) -> None:
    made = [
        create(notify_server, external_ref=f"ref-{i}", site_ids=[f"site-{i % 2}"]) for i in range(5)
    ]
    pages, token = [], ""
    while True:
        reply = notify_server.stub.ListSubscribers(
            pb.ListSubscribersRequest(page_size=2, page_token=token)
        )
        pages.append([s.id for s in reply.subscribers])
        token = reply.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sum(pages, []) == sorted(s.id for s in made)
    by_ref = notify_server.stub.ListSubscribers(pb.ListSubscribersRequest(external_ref="ref-3"))
    assert [s.id for s in by_ref.subscribers] == [made[3].id]
    by_site = notify_server.stub.ListSubscribers(pb.ListSubscribersRequest(site_id="site-1"))
    assert {s.id for s in by_site.subscribers} == {made[1].id, made[3].id}
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.ListSubscribers(pb.ListSubscribersRequest(page_token="garbage"))
    assert field_violations(caught.value) == ["page_token"]


def test_update_with_mask_etag_and_secret_kept(notify_server: NotifyServer) -> None:
    s = create(notify_server, webhook_url="https://hooks.example.org/h", webhook_secret="keep-me")
    request = pb.UpdateSubscriberRequest(
        subscriber=pb.Subscriber(
            id=s.id, etag=s.etag, display_name="Renamed", phone="+14155552671"
        ),
        update_mask=FieldMask(paths=["display_name", "phone"]),
        request_id=rid(),
    )
    updated = notify_server.stub.UpdateSubscriber(request).subscriber
    assert notify_server.stub.UpdateSubscriber(request).subscriber == updated  # idempotent
    assert (updated.display_name, updated.phone, updated.email) == (
        "Renamed",
        "+14155552671",
        s.email,
    )
    assert updated.webhook_secret_set and updated.etag == 'W/"2"'
    # a stale etag: ABORTED
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.UpdateSubscriber(
            pb.UpdateSubscriberRequest(
                subscriber=pb.Subscriber(id=s.id, etag=s.etag, display_name="Late"),
                update_mask=FieldMask(paths=["display_name"]),
                request_id=rid(),
            )
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    # invalid values and unknown mask paths: INVALID_ARGUMENT, nothing changed
    for sub, paths, bad in (
        (pb.Subscriber(email="broken@"), ["email"], "subscriber.email"),
        (pb.Subscriber(), ["etag"], "update_mask"),
    ):
        sub.id, sub.etag = s.id, updated.etag
        with pytest.raises(grpc.RpcError) as caught:
            notify_server.stub.UpdateSubscriber(
                pb.UpdateSubscriberRequest(
                    subscriber=sub, update_mask=FieldMask(paths=paths), request_id=rid()
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == [bad]
    got = notify_server.stub.GetSubscriber(pb.GetSubscriberRequest(id=s.id)).subscriber
    assert got == updated
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.UpdateSubscriber(
            pb.UpdateSubscriberRequest(subscriber=pb.Subscriber(id="nope", etag='W/"1"'))
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# --- Publish -------------------------------------------------------------------------------------


def test_publish_stores_one_delivery_per_allowed_channel_and_delivers(
    notify_server: NotifyServer,
) -> None:
    s = create(
        notify_server,
        phone="+447911123456",
        preferences=[
            pb.Preference(topic=LOT_EXPIRING, channels=[pb.CHANNEL_EMAIL, pb.CHANNEL_SMS])
        ],
    )
    muted = create(
        notify_server,
        external_ref="muted",
        preferences=[pb.Preference(topic=LOT_EXPIRING, channels=[])],
    )
    reply = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id, muted.id])
    n = reply.notification
    assert not reply.duplicate
    assert [(d.subscriber_id, d.channel) for d in n.deliveries] == [
        (s.id, pb.CHANNEL_EMAIL),
        (s.id, pb.CHANNEL_SMS),
    ]
    assert all(d.status == pb.DELIVERY_STATUS_PENDING for d in n.deliveries)
    assert n.site_ids == ["site-1"] and n.payload.lot_expiring.lot_number == "LOT42"
    assert notify_server.run_once() == 2
    assert _status(notify_server, n.id) == [DELIVERED, DELIVERED]
    email = notify_server.recorders[Channel.EMAIL].sent[0]
    assert email.destination == "pat@example.org" and "LOT42" in email.subject
    assert "<b>LOT42</b>" in email.html
    sms = notify_server.recorders[Channel.SMS].sent[0]
    assert sms.destination == "+447911123456" and "privigen" not in sms.text.lower()
    assert notify_server.run_once() == 0  # nothing sent twice


def test_dedupe_key_and_request_id_return_the_first_notification(
    notify_server: NotifyServer,
) -> None:
    s = create(notify_server)
    first = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id], dedupe_key="LOT:1:30")
    again = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id], dedupe_key="LOT:1:30")
    assert again.duplicate and again.notification.id == first.notification.id
    request_id = rid()
    a = publish(notify_server, LOT_EXPIRING, lot_expiring(lot="L2"), [s.id], request_id=request_id)
    b = publish(notify_server, LOT_EXPIRING, lot_expiring(lot="L2"), [s.id], request_id=request_id)
    assert a == b
    assert _count(notify_server) == 2
    assert notify_server.drain() == 2


def test_a_repeated_publish_answers_the_first_even_after_its_subscriber_changed(
    notify_server: NotifyServer,
) -> None:
    """A Publish without a dedupe key runs without a claim on PostgreSQL, its request_id
    riding in its one write (services.common.idempotency, ``in_one_statement``). A repeat
    after the subscriber's address changed would plan another delivery; it answers the first
    response instead. Eight twins sent at once write one notification between them."""
    s = create(notify_server)
    request_id = rid()
    first = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id], request_id=request_id)
    notify_server.stub.UpdateSubscriber(
        pb.UpdateSubscriberRequest(
            subscriber=pb.Subscriber(id=s.id, etag=s.etag, email="moved@example.org"),
            update_mask=FieldMask(paths=["email"]),
            request_id=rid(),
        )
    )
    again = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id], request_id=request_id)
    assert again == first
    assert [d.destination for d in again.notification.deliveries] == ["pat@example.org"]
    twin = rid()
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: publish(
                    notify_server, LOT_EXPIRING, lot_expiring(lot="L9"), [s.id], request_id=twin
                ),
                range(8),
            )
        )
    assert all(a == answers[0] for a in answers)
    assert _count(notify_server) == 2
    assert notify_server.drain() == 2  # one delivery each, sent once


def test_publish_bad_input_writes_nothing(notify_server: NotifyServer) -> None:
    s = create(notify_server)
    cases = [
        (pb.TOPIC_UNSPECIFIED, lot_expiring(), [s.id], ["topic"]),
        (42, lot_expiring(), [s.id], ["topic"]),
        (pb.TOPIC_LOW_STOCK, lot_expiring(), [s.id], ["payload"]),
        (LOT_EXPIRING, lot_expiring(), ["ghost"], ["subscriber_ids[0]"]),
        (LOT_EXPIRING, lot_expiring(lot=""), [s.id], ["payload.lot_expiring.lot_number"]),
    ]
    for topic, payload, ids, fields in cases:
        with pytest.raises(grpc.RpcError) as caught:
            publish(notify_server, topic, payload, ids)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, topic
        assert field_violations(caught.value) == fields
    bad_date = lot_expiring()
    bad_date.lot_expiring.expiry_date.month = 13
    with pytest.raises(grpc.RpcError) as caught:
        publish(notify_server, LOT_EXPIRING, bad_date, [s.id])
    assert "payload.lot_expiring.expiry_date" in field_violations(caught.value)
    with pytest.raises(grpc.RpcError) as caught:
        publish(
            notify_server,
            LOT_EXPIRING,
            lot_expiring(),
            [s.id],
            send_after=from_datetime(NOW + dt.timedelta(hours=2)),
            expires_at=from_datetime(NOW + dt.timedelta(hours=1)),
        )
    assert field_violations(caught.value) == ["expires_at"]
    assert _count(notify_server) == 0


def test_a_template_that_fails_to_render_is_invalid_argument(
    notify_factory: Factory, tmp_path: Path
) -> None:
    (tmp_path / "LOW_STOCK").mkdir()
    (tmp_path / "LOW_STOCK" / "email_text.txt").write_text("{{ p.brand | no_such_filter }}")
    server = notify_factory(config(template_dir=str(tmp_path)))
    s = create(server)
    payload = pb.Payload(low_stock=pb.LowStockPayload(site_id="site-1", product_code="x"))
    with pytest.raises(grpc.RpcError) as caught:
        publish(server, pb.TOPIC_LOW_STOCK, payload, [s.id])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["payload.low_stock"]
    assert _count(server) == 0


def test_broadcast_reaches_opted_in_subscribers_of_the_site(notify_server: NotifyServer) -> None:
    pref = [pb.Preference(topic=pb.TOPIC_LOT_EXPIRING, channels=[pb.CHANNEL_CONSOLE])]
    here = create(notify_server, external_ref="here", preferences=pref, site_ids=["site-1"])
    anywhere = create(notify_server, external_ref="anywhere", preferences=pref)
    create(notify_server, external_ref="elsewhere", preferences=pref, site_ids=["site-2"])
    create(notify_server, external_ref="not-opted-in")
    n = publish(notify_server, LOT_EXPIRING, lot_expiring(site="site-1")).notification
    assert sorted(d.subscriber_id for d in n.deliveries) == sorted([here.id, anywhere.id])
    assert {d.channel for d in n.deliveries} == {pb.CHANNEL_CONSOLE}
    assert notify_server.run_once() == 2


def test_publish_answers_what_get_reads_back(notify_server: NotifyServer) -> None:
    """Publish's answer is built from what it wrote and the request's payload, not read back:
    it must be what GetNotification reads, payload (dates, instants) included."""
    s = create(notify_server)
    for payload in (lot_expiring(), reminder(NOW + dt.timedelta(days=2))):
        topic = LOT_EXPIRING if payload.HasField("lot_expiring") else pb.TOPIC_APPOINTMENT_REMINDER
        reply = publish(notify_server, topic, payload, [s.id])
        written = notify_server.stub.GetNotification(
            pb.GetNotificationRequest(id=reply.notification.id)
        ).notification
        assert reply.notification == written


def test_a_broadcast_beyond_one_statement_writes_every_delivery(
    notify_server: NotifyServer,
) -> None:
    """Up to TOGETHER deliveries go in the one statement with the notification, its event and
    the stored response (store/publishing.py); more go by a statement of their own. Either
    way the answer is what was written, and a retry with the request_id replays it."""
    pref = [pb.Preference(topic=pb.TOPIC_LOT_EXPIRING, channels=[pb.CHANNEL_CONSOLE])]
    for i in range(TOGETHER + 2):
        create(notify_server, external_ref=f"r{i}", preferences=pref)
    request_id = rid()
    reply = publish(notify_server, LOT_EXPIRING, lot_expiring(), request_id=request_id)
    written = notify_server.stub.GetNotification(
        pb.GetNotificationRequest(id=reply.notification.id)
    ).notification
    assert len(reply.notification.deliveries) == TOGETHER + 2
    assert [d.id for d in reply.notification.deliveries] == [d.id for d in written.deliveries]
    assert publish(notify_server, LOT_EXPIRING, lot_expiring(), request_id=request_id) == reply
    assert notify_server.drain() == TOGETHER + 2


def test_a_patient_gets_only_what_names_them_never_a_broadcast(
    notify_server: NotifyServer,
) -> None:
    """A reminder broadcast to the site's staff names a patient: another patient who chose
    email for reminders must not receive it; their own, published naming them, arrives."""
    pref = [pb.Preference(topic=pb.TOPIC_APPOINTMENT_REMINDER, channels=[pb.CHANNEL_EMAIL])]
    staff = create(notify_server, external_ref="desk", preferences=pref)
    ada = create(
        notify_server, external_ref="MRN-A", preferences=pref, kind=pb.SUBSCRIBER_KIND_PATIENT
    )
    assert ada.kind == pb.SUBSCRIBER_KIND_PATIENT
    start = dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC)
    broadcast = publish(notify_server, pb.TOPIC_APPOINTMENT_REMINDER, reminder(start))
    assert [d.subscriber_id for d in broadcast.notification.deliveries] == [staff.id]
    own = publish(notify_server, pb.TOPIC_APPOINTMENT_REMINDER, reminder(start), [ada.id])
    assert [d.subscriber_id for d in own.notification.deliveries] == [ada.id]


def test_a_subscriber_made_staff_before_kind_existed_is_made_a_patient(
    notify_server: NotifyServer,
) -> None:
    """What the notify 0002 release note asks of operators: UpdateSubscriber with
    update_mask kind; from then on the subscriber receives no broadcast."""
    pref = [pb.Preference(topic=pb.TOPIC_APPOINTMENT_REMINDER, channels=[pb.CHANNEL_EMAIL])]
    ada = create(notify_server, external_ref="MRN-A", preferences=pref)
    start = dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC)
    before = publish(notify_server, pb.TOPIC_APPOINTMENT_REMINDER, reminder(start))
    assert [d.subscriber_id for d in before.notification.deliveries] == [ada.id]
    updated = notify_server.stub.UpdateSubscriber(
        pb.UpdateSubscriberRequest(
            subscriber=pb.Subscriber(id=ada.id, etag=ada.etag, kind=pb.SUBSCRIBER_KIND_PATIENT),
            update_mask=FieldMask(paths=["kind"]),
            request_id=rid(),
        )
    ).subscriber
    assert updated.kind == pb.SUBSCRIBER_KIND_PATIENT
    after = publish(notify_server, pb.TOPIC_APPOINTMENT_REMINDER, reminder(start))
    assert list(after.notification.deliveries) == []
    with pytest.raises(grpc.RpcError) as caught:  # the kind cannot be unset
        notify_server.stub.UpdateSubscriber(
            pb.UpdateSubscriberRequest(
                subscriber=pb.Subscriber(id=ada.id, etag=updated.etag),
                update_mask=FieldMask(paths=["kind"]),
                request_id=rid(),
            )
        )
    assert field_violations(caught.value) == ["subscriber.kind"]


def test_quiet_hours_defer_ordinary_topics_but_not_critical_ones(
    notify_server: NotifyServer,
) -> None:
    # 23:00 in London: inside 22:00-07:00
    notify_server.clock.set(dt.datetime(2026, 11, 24, 23, 0, tzinfo=dt.UTC))
    s = create(
        notify_server,
        quiet_hours=pb.QuietHours(
            start=timeofday_pb2.TimeOfDay(hours=22), end=timeofday_pb2.TimeOfDay(hours=7)
        ),
    )
    ordinary = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id]).notification
    critical = publish(
        notify_server,
        pb.TOPIC_LOT_RECALLED,
        pb.Payload(lot_recalled=pb.LotRecalledPayload(brand="Privigen", lot_number="P9")),
        [s.id],
    ).notification
    (d,) = ordinary.deliveries
    assert d.deferred_by_quiet_hours
    assert d.next_attempt_time.ToDatetime(dt.UTC) == dt.datetime(2026, 11, 25, 7, 0, tzinfo=dt.UTC)
    assert not critical.deliveries[0].deferred_by_quiet_hours
    assert notify_server.run_once() == 1  # only the recall goes out at night
    assert _status(notify_server, critical.id) == [DELIVERED]
    notify_server.clock.set(dt.datetime(2026, 11, 25, 7, 0, tzinfo=dt.UTC))
    assert notify_server.run_once() == 1
    assert _status(notify_server, ordinary.id) == [DELIVERED]


def test_send_after_and_expiry(notify_server: NotifyServer) -> None:
    s = create(notify_server)
    later = publish(
        notify_server,
        LOT_EXPIRING,
        lot_expiring(),
        [s.id],
        send_after=from_datetime(NOW + dt.timedelta(hours=1)),
        expires_at=from_datetime(NOW + dt.timedelta(hours=3)),
    ).notification
    stale = publish(
        notify_server,
        LOT_EXPIRING,
        lot_expiring(lot="L9"),
        [s.id],
        send_after=from_datetime(NOW + dt.timedelta(hours=5)),
        expires_at=from_datetime(NOW + dt.timedelta(hours=6)),
    ).notification
    assert notify_server.run_once() == 0
    notify_server.clock.advance(dt.timedelta(hours=1))
    assert notify_server.run_once() == 1
    assert _status(notify_server, later.id) == [DELIVERED]
    notify_server.clock.advance(dt.timedelta(hours=6))  # past stale's expiry before it went
    assert notify_server.run_once() == 0
    assert _status(notify_server, stale.id) == [pb.DELIVERY_STATUS_EXPIRED]


# --- Cancel, Get, List ---------------------------------------------------------------------------


def test_cancel_by_id_and_by_dedupe_key(notify_server: NotifyServer) -> None:
    s = create(notify_server)
    a = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id], dedupe_key="a").notification
    b = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id], dedupe_key="b").notification
    request = pb.CancelNotificationRequest(id=a.id, request_id=rid())
    cancelled = notify_server.stub.CancelNotification(request).notification
    assert notify_server.stub.CancelNotification(request).notification == cancelled
    assert cancelled.HasField("cancel_time")
    assert [d.status for d in cancelled.deliveries] == [pb.DELIVERY_STATUS_CANCELLED]
    by_key = notify_server.stub.CancelNotification(
        pb.CancelNotificationRequest(dedupe_key="b", request_id=rid())
    ).notification
    assert by_key.id == b.id
    assert notify_server.run_once() == 0  # nothing left to send
    for request in (
        pb.CancelNotificationRequest(),
        pb.CancelNotificationRequest(id=a.id, dedupe_key="a"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            notify_server.stub.CancelNotification(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.CancelNotification(pb.CancelNotificationRequest(dedupe_key="zzz"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_and_list_notifications(notify_server: NotifyServer) -> None:
    s1 = create(notify_server, external_ref="one")
    s2 = create(notify_server, external_ref="two")
    n1 = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s1.id], dedupe_key="k1")
    n2 = publish(notify_server, pb.TOPIC_APPOINTMENT_REMINDER, reminder(NOW), [s2.id])
    n3 = publish(notify_server, LOT_EXPIRING, lot_expiring(lot="L3"), [s1.id, s2.id])
    notify_server.recorders[Channel.EMAIL].fail_with.append(PermanentFailure("bounced"))
    notify_server.drain()
    ids = [n.notification.id for n in (n1, n2, n3)]

    def listed(**filters: object) -> list[str]:
        reply = notify_server.stub.ListNotifications(pb.ListNotificationsRequest(**filters))  # type: ignore[arg-type]
        return [n.id for n in reply.notifications]

    assert listed() == ids
    assert listed(topic=LOT_EXPIRING) == [ids[0], ids[2]]
    assert listed(subscriber_id=s2.id) == [ids[1], ids[2]]
    assert listed(dedupe_key="k1") == [ids[0]]
    assert listed(status=pb.DELIVERY_STATUS_PERMANENT_FAILURE) == [ids[0]]
    first = notify_server.stub.ListNotifications(pb.ListNotificationsRequest(page_size=2))
    rest = notify_server.stub.ListNotifications(
        pb.ListNotificationsRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [n.id for n in first.notifications] + [n.id for n in rest.notifications] == ids
    assert not rest.next_page_token
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.GetNotification(pb.GetNotificationRequest(id="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "RESOURCE_NOT_FOUND"
    assert error_metadata(caught.value)["resource_type"] == "notification"
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.ListNotifications(pb.ListNotificationsRequest(topic=99))
    assert field_violations(caught.value) == ["topic"]


# --- retries, dead letters, crash recovery -------------------------------------------------------


def test_temporary_failures_are_retried_with_backoff_then_dead_lettered(
    notify_server: NotifyServer,
) -> None:
    s = create(notify_server)
    recorder = notify_server.recorders[Channel.EMAIL]
    recorder.fail_with = [TemporaryFailure("421 try later")]
    n = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id]).notification
    assert notify_server.run_once() == 1
    d = notify_server.stub.GetNotification(pb.GetNotificationRequest(id=n.id)).notification
    (delivery,) = d.deliveries
    assert delivery.status == pb.DELIVERY_STATUS_TEMPORARY_FAILURE
    wait = delivery.next_attempt_time.ToDatetime(dt.UTC) - NOW
    assert dt.timedelta(seconds=30) <= wait <= dt.timedelta(seconds=60)  # base 60 s, jittered
    assert notify_server.run_once() == 0  # not before its time
    notify_server.clock.advance(wait)
    assert notify_server.run_once() == 1
    (delivery,) = _deliveries(notify_server, n.id)
    assert delivery.status == DELIVERED
    assert [(a.number, a.outcome) for a in delivery.attempts] == [
        (1, pb.DELIVERY_STATUS_TEMPORARY_FAILURE),
        (2, DELIVERED),
    ]
    assert "421" in delivery.attempts[0].error
    # a delivery that keeps failing stops after max_attempts (4) as PERMANENT_FAILURE
    recorder.fail_with = [TemporaryFailure("down")] * 10
    m = publish(notify_server, LOT_EXPIRING, lot_expiring(lot="L5"), [s.id]).notification
    for _ in range(6):
        notify_server.run_once()
        notify_server.clock.advance(dt.timedelta(hours=2))
    (dead,) = _deliveries(notify_server, m.id)
    assert dead.status == pb.DELIVERY_STATUS_PERMANENT_FAILURE
    assert len(dead.attempts) == 4 and "retries exhausted" in dead.last_error


def test_a_permanent_failure_is_not_retried(notify_server: NotifyServer) -> None:
    s = create(notify_server)
    notify_server.recorders[Channel.EMAIL].fail_with = [PermanentFailure("550 no such user")]
    n = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id]).notification
    assert notify_server.run_once() == 1
    notify_server.clock.advance(dt.timedelta(days=1))
    assert notify_server.run_once() == 0
    (d,) = _deliveries(notify_server, n.id)
    assert d.status == pb.DELIVERY_STATUS_PERMANENT_FAILURE and len(d.attempts) == 1


def test_an_abandoned_attempt_is_taken_up_again_after_its_lease(
    notify_server: NotifyServer,
) -> None:
    s = create(notify_server)
    n = publish(notify_server, LOT_EXPIRING, lot_expiring(), [s.id]).notification
    claimed = notify_server.app.dispatcher.claim()  # a dispatcher claims, then dies
    assert len(claimed) == 1
    assert _deliveries(notify_server, n.id)[0].status == pb.DELIVERY_STATUS_SENDING
    assert notify_server.run_once() == 0  # leased: nobody else takes it
    notify_server.clock.advance(dt.timedelta(seconds=121))
    assert notify_server.run_once() == 1
    (d,) = _deliveries(notify_server, n.id)
    assert d.status == DELIVERED
    assert [a.outcome for a in d.attempts] == [pb.DELIVERY_STATUS_TEMPORARY_FAILURE, DELIVERED]
    assert "abandoned" in d.attempts[0].error


def _deliveries(server: NotifyServer, notification_id: str) -> list[pb.Delivery]:
    n = server.stub.GetNotification(pb.GetNotificationRequest(id=notification_id)).notification
    return list(n.deliveries)


def test_two_dispatchers_send_each_delivery_once(notify_factory: Factory) -> None:
    """Two notify processes (NOTIFY_PROCESSES=2) on one database, each with its dispatcher:
    draining at once, in small batches, they send every delivery exactly once (PostgreSQL:
    claimed FOR UPDATE SKIP LOCKED; SQLite: the write lock) and every one ends DELIVERED."""
    settings = config(dispatch_batch=4)
    first, second = notify_factory(settings), notify_factory(settings)
    s = create(first)
    published = [
        publish(first, LOT_EXPIRING, lot_expiring(lot=f"L{i}"), [s.id]).notification
        for i in range(40)
    ]
    with ThreadPoolExecutor(2) as pool:
        drained = list(pool.map(lambda server: server.drain(), (first, second)))
    sent = [
        m.delivery_id for server in (first, second) for m in server.recorders[Channel.EMAIL].sent
    ]
    assert sum(drained) == len(sent) == len(set(sent)) == 40
    assert sorted(sent) == sorted(d.id for n in published for d in n.deliveries)
    assert {status for n in published for status in _status(first, n.id)} == {DELIVERED}
