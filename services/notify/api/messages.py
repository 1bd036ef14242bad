"""Protobuf ⇄ notify's domain: subscribers, typed payloads (as stored JSON and as template
values), notifications with their deliveries, and stream events. Translation only: a field the
domain cannot take is a field violation here; every rule lives in domain/ and the use cases."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from infusion.notify.v1 import notify_pb2 as pb
from services.common.convert import (
    from_datetime,
    from_money,
    from_time_of_day,
    parse_time_of_day,
    to_datetime,
)
from services.common.errors import Violations
from services.common.etag import etag_for
from services.notify.domain.model import (
    Channel,
    QuietHours,
    Status,
    Subscriber,
    SubscriberKind,
    Topic,
    preference_list,
)
from services.notify.domain.own import MySettings, message_of
from services.notify.domain.views import EventView, NotificationView, StoredSubscriber
from services.notify.usecases.notifications import PublishCommand

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
    if f.name
    not in {"id", "etag", "create_time", "update_time", "webhook_secret_set", "user_subject"}
)


# --- subscribers ------------------------------------------------------------------------------


def subscriber_in(msg: pb.Subscriber, v: Violations, prefix: str = "subscriber") -> Subscriber:
    preferences, quiet = _preferences_in(msg, v, prefix)
    kind = KIND_IN.get(msg.kind)  # None when unspecified: validate_subscriber says so
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


def _preferences_in(
    msg: pb.Subscriber | pb.MyNotificationSettings, v: Violations, prefix: str
) -> tuple[dict[Topic, tuple[Channel, ...]], QuietHours | None]:
    """The preferences and quiet hours of a subscriber or of a user's own settings."""
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
    quiet = None
    if msg.HasField("quiet_hours"):
        start = parse_time_of_day(msg.quiet_hours.start, f"{prefix}.quiet_hours.start", v)
        end = parse_time_of_day(msg.quiet_hours.end, f"{prefix}.quiet_hours.end", v)
        if start is not None and end is not None:
            quiet = QuietHours(start, end)
    return preferences, quiet


def settings_in(msg: pb.MyNotificationSettings, v: Violations) -> MySettings:
    preferences, quiet = _preferences_in(msg, v, "settings")
    return MySettings(
        display_name=msg.display_name,
        time_zone=msg.time_zone,
        email=msg.email.strip(),
        phone=msg.phone.strip(),
        preferences=preferences,
        quiet_hours=quiet,
    )


def settings_out(stored: StoredSubscriber | None) -> pb.MyNotificationSettings:
    """A user's own settings (empty, without an etag, before their subscriber exists)."""
    if stored is None:
        return pb.MyNotificationSettings()
    whole = subscriber_out(stored)  # never the secret
    msg = pb.MyNotificationSettings(
        subscriber_id=whole.id,
        display_name=whole.display_name,
        time_zone=whole.time_zone,
        email=whole.email,
        phone=whole.phone,
        preferences=whole.preferences,
        site_ids=whole.site_ids,
        etag=whole.etag,
        update_time=whole.update_time,
    )
    if whole.HasField("quiet_hours"):
        msg.quiet_hours.CopyFrom(whole.quiet_hours)
    return msg


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
        user_subject=s.user_subject,
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


def notification_out(n: NotificationView, published: pb.Payload | None = None) -> pb.Notification:
    """The notification as the API shows it. ``published``: the payload it was published with,
    when the caller has it (Publish: the request's, which is what was stored), instead of the
    stored JSON parsed back, the costliest part of Publish's answer."""
    payload = pb.Payload()
    if published is not None:
        payload.CopyFrom(published)
        payload.DiscardUnknownFields()  # as stored: the JSON keeps known fields only
    else:
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


def my_notification_out(n: NotificationView) -> pb.MyNotification:
    """A notification as its recipient sees it: the text and their own deliveries."""
    whole = notification_out(n)
    subject, text = message_of(n.deliveries)
    msg = pb.MyNotification(
        notification_id=n.id,
        topic=whole.topic,
        create_time=whole.create_time,
        subject=subject,
        text=text,
        deliveries=whole.deliveries,
    )
    if whole.HasField("cancel_time"):
        msg.cancel_time.CopyFrom(whole.cancel_time)
    return msg


def topic_in(value: int, field: str, v: Violations) -> Topic | None:
    topic = TOPIC_IN.get(value)
    if topic is None:
        v.add(
            field,
            "is required and must be a known topic"
            if value == 0
            else f"{value} is not a known topic",
        )
    return topic


def publish_in(request: pb.PublishRequest, v: Violations) -> PublishCommand | None:
    """The command a Publish request asks for; None when its topic is not known (a violation
    then says so)."""
    topic = topic_in(request.topic, "topic", v)
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
    if topic is None:
        return None
    return PublishCommand(
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


def topics_in(values: Any, field: str, v: Violations) -> set[Topic]:
    """The topics a repeated field names; each unknown one is a violation at ``field[i]``."""
    found = set()
    for i, value in enumerate(values):
        topic = topic_in(value, f"{field}[{i}]", v)
        if topic is not None:
            found.add(topic)
    return found


def status_in(value: int, field: str, v: Violations) -> Status | None:
    """A delivery status filter: None when unset or unknown (the latter a violation)."""
    if not value:
        return None
    status = STATUS_IN.get(value)
    if status is None:
        v.add(field, f"{value} is not a known status")
    return status


def event_out(e: EventView) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(
        event=pb.NotificationEvent(
            sequence=e.seq,
            kind=EVENT_KIND[e.kind],
            notification=notification_out(e.notification),
            event_time=from_datetime(e.created_at),
        )
    )


def heartbeat_out(cursor: int, now: dt.datetime) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(heartbeat=pb.Heartbeat(sequence=cursor, time=from_datetime(now)))
