"""NotifyService servicer: protobuf <-> notify use cases. No rules live here."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc as pb_grpc
from services.common.convert import (
    from_datetime,
    from_money,
    from_time_of_day,
    parse_time_of_day,
    to_datetime,
)
from services.common.errors import FieldViolation, InvalidArgument, Violations
from services.common.etag import etag_for
from services.common.fieldmask import apply_mask
from services.common.idempotency import IdempotencyStore
from services.common.pagination import page_request, split_page
from services.notify.domain.model import (
    Channel,
    QuietHours,
    Status,
    Subscriber,
    SubscriberKind,
    Topic,
    preference_list,
)
from services.notify.domain.views import EventView, NotificationView, StoredSubscriber
from services.notify.service import (
    EventLog,
    NotificationService,
    PublishCommand,
    SubscriberService,
)

R = TypeVar("R", bound=Message)
log = logging.getLogger(__name__)

TOPIC = {t: getattr(pb, f"TOPIC_{t.value}") for t in Topic}
TOPIC_IN = {v: k for k, v in TOPIC.items()}
CHANNEL = {c: getattr(pb, f"CHANNEL_{c.value}") for c in Channel}
CHANNEL_IN = {v: k for k, v in CHANNEL.items()}
STATUS = {s: getattr(pb, f"DELIVERY_STATUS_{s.value}") for s in Status}
STATUS_IN = {v: k for k, v in STATUS.items()}
PAYLOAD_FIELD = {t: t.value.lower() for t in Topic}  # Topic.LOT_RECALLED -> "lot_recalled"
EVENT_KIND = {
    "PUBLISHED": pb.NotificationEvent.KIND_PUBLISHED,
    "CANCELLED": pb.NotificationEvent.KIND_CANCELLED,
}
KIND: dict[SubscriberKind, Any] = {
    k: pb.SubscriberKind.Value(f"SUBSCRIBER_KIND_{k.value}") for k in SubscriberKind
}
KIND_IN = {v: k for k, v in KIND.items()}
MUTABLE = tuple(
    f.name
    for f in pb.Subscriber.DESCRIPTOR.fields
    if f.name not in {"id", "etag", "create_time", "update_time", "webhook_secret_set"}
)


# --- subscribers ------------------------------------------------------------------------------


def subscriber_in(msg: pb.Subscriber, v: Violations, prefix: str = "subscriber") -> Subscriber:
    items = []
    for i, p in enumerate(msg.preferences):
        topic = TOPIC_IN.get(p.topic)
        if topic is None:
            v.add(f"{prefix}.preferences[{i}].topic", "is not a known topic")
            continue
        channels = []
        for j, c in enumerate(p.channels):
            channel = CHANNEL_IN.get(c)
            if channel is None:
                v.add(f"{prefix}.preferences[{i}].channels[{j}]", "is not a known channel")
            else:
                channels.append(channel)
        items.append((topic, channels))
    preferences = preference_list(items, f"{prefix}.preferences", v)
    kind = KIND_IN.get(msg.kind)  # None when unspecified: validate_subscriber says so
    quiet = None
    if msg.HasField("quiet_hours"):
        start = parse_time_of_day(msg.quiet_hours.start, f"{prefix}.quiet_hours.start", v)
        end = parse_time_of_day(msg.quiet_hours.end, f"{prefix}.quiet_hours.end", v)
        if start is not None and end is not None:
            quiet = QuietHours(start, end)
    return Subscriber(
        external_ref=msg.external_ref,
        display_name=msg.display_name,
        time_zone=msg.time_zone,
        email=msg.email.strip(),
        phone=msg.phone.strip(),
        webhook_url=msg.webhook_url.strip(),
        webhook_secret=msg.webhook_secret,
        preferences=preferences,
        quiet_hours=quiet,
        site_ids=tuple(msg.site_ids),
        kind=kind,
        organisation_id=msg.organisation_id,
    )


def subscriber_out(stored: StoredSubscriber, *, with_secret: bool = False) -> pb.Subscriber:
    s = stored.subscriber
    msg = pb.Subscriber(
        id=stored.id,
        external_ref=s.external_ref,
        display_name=s.display_name,
        time_zone=s.time_zone,
        email=s.email,
        phone=s.phone,
        webhook_url=s.webhook_url,
        webhook_secret=s.webhook_secret if with_secret else "",
        webhook_secret_set=bool(s.webhook_secret),
        preferences=[
            pb.Preference(topic=TOPIC[t], channels=[CHANNEL[c] for c in chans])
            for t, chans in s.preferences.items()
        ],
        site_ids=list(s.site_ids),
        kind=KIND[s.kind] if s.kind else pb.SUBSCRIBER_KIND_UNSPECIFIED,
        organisation_id=s.organisation_id,
        etag=etag_for(stored.revision),
        create_time=from_datetime(stored.created_at),
        update_time=from_datetime(stored.updated_at),
    )
    if s.quiet_hours is not None:
        msg.quiet_hours.start.CopyFrom(from_time_of_day(s.quiet_hours.start))
        msg.quiet_hours.end.CopyFrom(from_time_of_day(s.quiet_hours.end))
    return msg


# --- payloads ---------------------------------------------------------------------------------


def _context(msg: Message, path: str, v: Violations) -> dict[str, Any]:
    """A payload message as template values: Date -> date, Timestamp -> aware datetime, Money
    -> "12.50 GBP"; unset message fields -> None."""
    found: dict[str, Any] = {}
    for fd in msg.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        where = f"{path}.{fd.name}"
        if fd.message_type is None:
            found[fd.name] = list(value) if _repeated(fd) else value
        elif _repeated(fd):
            found[fd.name] = [_context(x, f"{where}[{i}]", v) for i, x in enumerate(value)]
        else:
            found[fd.name] = _special(msg, fd.name, fd.message_type.full_name, value, where, v)
    return found


def _repeated(fd: Any) -> bool:
    return bool(fd.is_repeated)


def _special(msg: Message, name: str, kind: str, value: Any, where: str, v: Violations) -> Any:
    if not msg.HasField(name):
        return None
    if kind == "google.type.Date":
        try:
            return dt.date(value.year, value.month, value.day)
        except ValueError:
            v.add(where, f"{value.year:04d}-{value.month:02d}-{value.day:02d} is not a date")
            return None
    if kind == "google.protobuf.Timestamp":
        return to_datetime(value)
    if kind == "google.type.Money":
        amount: Decimal = from_money(value)
        return f"{amount.normalize():f} {value.currency_code}"
    return _context(value, where, v)


def payload_in(
    topic: Topic, payload: pb.Payload, v: Violations
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(protobuf JSON to store, template context, site ids the payload concerns)."""
    name = PAYLOAD_FIELD[topic]
    kind = payload.WhichOneof("kind")
    if kind != name:
        v.add(
            "payload",
            f"a {topic.value} notification needs payload.{name}"
            + (f" (got payload.{kind})" if kind else ""),
        )
        return {}, {}, []
    inner: Message = getattr(payload, name)
    context = _context(inner, f"payload.{name}", v)
    stored = json_format.MessageToDict(inner, preserving_proto_field_name=True)
    sites = [context["site_id"]] if context.get("site_id") else []
    sites += [s for s in context.get("sites", []) if s]
    return stored, context, sites


def notification_out(n: NotificationView) -> pb.Notification:
    payload = pb.Payload()
    json_format.ParseDict({PAYLOAD_FIELD[n.topic]: n.payload}, payload)
    msg = pb.Notification(
        id=n.id,
        topic=TOPIC[n.topic],
        payload=payload,
        subscriber_ids=list(n.subscriber_ids),
        dedupe_key=n.dedupe_key,
        send_after=from_datetime(n.send_after),
        create_time=from_datetime(n.created_at),
        site_ids=list(n.site_ids),
        organisation_id=n.organisation_id,
    )
    if n.expires_at is not None:
        msg.expires_at.CopyFrom(from_datetime(n.expires_at))
    if n.cancelled_at is not None:
        msg.cancel_time.CopyFrom(from_datetime(n.cancelled_at))
    for d in n.deliveries:
        out = msg.deliveries.add(
            id=d.id,
            subscriber_id=d.subscriber_id,
            channel=CHANNEL[d.channel],
            destination=d.destination,
            status=STATUS[d.status],
            last_error=d.last_error,
            deferred_by_quiet_hours=d.deferred,
        )
        if d.next_attempt_at is not None:
            out.next_attempt_time.CopyFrom(from_datetime(d.next_attempt_at))
        if d.delivered_at is not None:
            out.deliver_time.CopyFrom(from_datetime(d.delivered_at))
        for a in d.attempts:
            attempt = out.attempts.add(
                number=a.number,
                start_time=from_datetime(a.started_at),
                outcome=STATUS[Status(a.outcome)],
                error=a.error,
            )
            if a.finished_at is not None:
                attempt.end_time.CopyFrom(from_datetime(a.finished_at))
    return msg


def _topic(value: int, field: str, v: Violations) -> Topic | None:
    topic = TOPIC_IN.get(value)
    if topic is None:
        v.add(
            field,
            "is required and must be a known topic"
            if value == 0
            else f"{value} is not a known topic",
        )
    return topic


class EventSignal:
    """Wakes this process's Subscribe streams: each stream listens on its own event, set when
    Publish or Cancel writes here, when :class:`EventWatcher` sees another replica's events,
    or when the stream's call ends (so a stream never sleeps on a gone client)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: set[threading.Event] = set()

    def notify(self) -> None:
        with self._lock:
            for wake in self._listeners:
                wake.set()

    @contextmanager
    def listener(self) -> Iterator[threading.Event]:
        wake = threading.Event()
        with self._lock:
            self._listeners.add(wake)
        try:
            yield wake
        finally:
            with self._lock:
                self._listeners.discard(wake)

    @property
    def listening(self) -> int:
        with self._lock:
            return len(self._listeners)


class EventWatcher:
    """One thread for all of a process's streams: every ``interval`` seconds, while any stream
    listens, it reads the last event sequence and wakes the streams when another replica has
    written past it. (Each stream polling the database itself cost a query per stream per
    interval: 400 a second for 200 idle streams.)"""

    def __init__(
        self, last_sequence: Callable[[], int], signal: EventSignal, interval: float
    ) -> None:
        self._last_sequence = last_sequence
        self._signal = signal
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = 0

    def check(self) -> None:
        if not self._signal.listening:
            return
        latest = self._last_sequence()
        if latest > self._seen:  # (the first look wakes the streams once: harmless)
            self._seen = latest
            self._signal.notify()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # the database away: streams keep their heartbeats
                log.warning("event watcher could not read the event log", exc_info=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notify-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class NotifyApi(pb_grpc.NotifyServiceServicer):
    def __init__(
        self,
        subscribers: SubscriberService,
        notifications: NotificationService,
        events: EventLog,
        idempotency: IdempotencyStore,
        signal: EventSignal,
        *,
        heartbeat_seconds: float,
        idle_seconds: float,
        on_publish: Callable[[], None] = lambda: None,
        clock_now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.subscribers = subscribers
        self.notifications = notifications
        self.events = events
        self.idem = idempotency
        self.signal = signal
        self.heartbeat_seconds = heartbeat_seconds
        self.idle_seconds = idle_seconds
        self.on_publish = on_publish
        self.clock_now = clock_now
        self.closing = threading.Event()

    def _mutate(self, name: str, request: Message, rtype: type[R], fn: Callable[..., R]) -> R:
        return self.idem.run(f"notify.{name}", request, rtype, fn)

    # --- subscribers --------------------------------------------------------------------------

    def CreateSubscriber(
        self, request: pb.CreateSubscriberRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        subscriber = subscriber_in(request.subscriber, v)
        v.raise_if_any()
        return self._mutate(
            "CreateSubscriber",
            request,
            pb.CreateSubscriberResponse,
            lambda s: pb.CreateSubscriberResponse(
                subscriber=subscriber_out(self.subscribers.create(s, subscriber))
            ),
        )

    def GetSubscriber(self, request: pb.GetSubscriberRequest, context: grpc.ServicerContext) -> Any:
        if not request.id:
            raise InvalidArgument([FieldViolation("id", "is required")])
        return pb.GetSubscriberResponse(subscriber=subscriber_out(self.subscribers.get(request.id)))

    def ListSubscribers(
        self, request: pb.ListSubscribersRequest, context: grpc.ServicerContext
    ) -> Any:
        scope = f"subscribers:{request.external_ref}:{request.site_id}"
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.subscribers.list(request.external_ref, request.site_id, page),
            page,
            lambda s: [s.id],
            scope=scope,
        )
        return pb.ListSubscribersResponse(
            subscribers=[subscriber_out(s) for s in rows], next_page_token=token
        )

    def UpdateSubscriber(
        self, request: pb.UpdateSubscriberRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.subscriber.id:
            raise InvalidArgument([FieldViolation("subscriber.id", "is required")])

        def change(current: StoredSubscriber) -> Subscriber:
            merged: pb.Subscriber = apply_mask(  # type: ignore[assignment]
                subscriber_out(current, with_secret=True),
                request.subscriber,
                request.update_mask,
                MUTABLE,
                prefix="subscriber",
            )
            v = Violations()
            subscriber = subscriber_in(merged, v)
            v.raise_if_any()
            return subscriber

        return self._mutate(
            "UpdateSubscriber",
            request,
            pb.UpdateSubscriberResponse,
            lambda s: pb.UpdateSubscriberResponse(
                subscriber=subscriber_out(
                    self.subscribers.update(
                        s, request.subscriber.id, request.subscriber.etag, change
                    )
                )
            ),
        )

    # --- notifications ------------------------------------------------------------------------

    def Publish(self, request: pb.PublishRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        topic = _topic(request.topic, "topic", v)
        stored: dict[str, Any] = {}
        ctx: dict[str, Any] = {}
        sites: list[str] = []
        if topic is not None:
            stored, ctx, sites = payload_in(topic, request.payload, v)
        for i, sid in enumerate(request.subscriber_ids):
            if not sid:
                v.add(f"subscriber_ids[{i}]", "must not be empty")
        if len(request.dedupe_key) > 200:
            v.add("dedupe_key", "must be at most 200 characters")
        v.raise_if_any()
        assert topic is not None
        command = PublishCommand(
            topic=topic,
            subscriber_ids=list(request.subscriber_ids),
            payload_json=stored,
            context=ctx,
            payload_field=f"payload.{PAYLOAD_FIELD[topic]}",
            site_ids=sites,
            dedupe_key=request.dedupe_key,
            send_after=to_datetime(request.send_after) if request.HasField("send_after") else None,
            expires_at=to_datetime(request.expires_at) if request.HasField("expires_at") else None,
            organisation_id=request.organisation_id,
        )

        def publish(session: Any) -> pb.PublishResponse:
            result = self.notifications.publish(session, command)
            return pb.PublishResponse(
                notification=notification_out(result.notification), duplicate=result.duplicate
            )

        response = self._mutate("Publish", request, pb.PublishResponse, publish)
        self.signal.notify()
        self.on_publish()
        return response

    def CancelNotification(
        self, request: pb.CancelNotificationRequest, context: grpc.ServicerContext
    ) -> Any:
        response = self._mutate(
            "CancelNotification",
            request,
            pb.CancelNotificationResponse,
            lambda s: pb.CancelNotificationResponse(
                notification=notification_out(
                    self.notifications.cancel(s, request.id, request.dedupe_key)
                )
            ),
        )
        self.signal.notify()
        return response

    def GetNotification(
        self, request: pb.GetNotificationRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.id:
            raise InvalidArgument([FieldViolation("id", "is required")])
        return pb.GetNotificationResponse(
            notification=notification_out(self.notifications.get(request.id))
        )

    def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        topic = _topic(request.topic, "topic", v) if request.topic else None
        status = None
        if request.status:
            status = STATUS_IN.get(request.status)
            if status is None:
                v.add("status", f"{request.status} is not a known status")
        v.raise_if_any()
        scope = (
            f"notifications:{request.topic}:{request.subscriber_id}:{request.status}:"
            f"{request.dedupe_key}"
        )
        page = page_request(request.page_size, request.page_token, scope=scope)
        rows, token = split_page(
            self.notifications.list(
                page,
                topic=topic,
                subscriber_id=request.subscriber_id,
                status=status,
                dedupe_key=request.dedupe_key,
            ),
            page,
            lambda n: [n.id],
            scope=scope,
        )
        return pb.ListNotificationsResponse(
            notifications=[notification_out(n) for n in rows], next_page_token=token
        )

    # --- the stream ---------------------------------------------------------------------------

    def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.SubscribeResponse]:
        v = Violations()
        topics = set()
        for i, t in enumerate(request.topics):
            found = _topic(t, f"topics[{i}]", v)
            if found is not None:
                topics.add(found)
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        v.raise_if_any()
        matches = self.events.filter(topics, request.site_id, request.subscriber_ids)
        with self.signal.listener() as wake:
            context.add_callback(wake.set)
            yield from self._events(request.after_sequence, matches, wake, context)

    def _events(
        self,
        cursor: int,
        matches: Callable[[EventView], bool],
        wake: threading.Event,
        context: grpc.ServicerContext,
    ) -> Iterator[pb.SubscribeResponse]:
        """Replay after ``cursor``, then live events, heartbeats between them. The stream ends
        cleanly (status OK, after a heartbeat carrying the cursor to resume from) when it has
        had no event for ``idle_seconds`` or the server is shutting down; it ends at once when
        the client goes away."""
        batch = 200
        last_beat = last_event = time.monotonic()
        while context.is_active() and not self.closing.is_set():
            wake.clear()
            events = self.events.after(cursor, batch)
            for e in events:
                cursor = e.seq
                if matches(e):
                    last_event = time.monotonic()
                    yield pb.SubscribeResponse(
                        event=pb.NotificationEvent(
                            sequence=e.seq,
                            kind=EVENT_KIND[e.kind],
                            notification=notification_out(e.notification),
                            event_time=from_datetime(e.created_at),
                        )
                    )
            if len(events) == batch:
                continue
            now = time.monotonic()
            if now - last_event >= self.idle_seconds:
                break
            if now - last_beat >= self.heartbeat_seconds:
                last_beat = now
                yield self._heartbeat(cursor)
            due = min(last_beat + self.heartbeat_seconds, last_event + self.idle_seconds)
            wake.wait(max(due - now, 0))
        if context.is_active():
            yield self._heartbeat(cursor)

    def _heartbeat(self, cursor: int) -> pb.SubscribeResponse:
        return pb.SubscribeResponse(
            heartbeat=pb.Heartbeat(sequence=cursor, time=from_datetime(self.clock_now()))
        )

    def close_streams(self) -> None:
        """Server shutting down: every stream sends its cursor and ends."""
        self.closing.set()
        self.signal.notify()
