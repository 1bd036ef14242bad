"""Subscribers, topics, channels and the rules that decide who gets what on which channel.

Pure Python: no gRPC, no SQL, no clock reads. Contact points are validated with the libraries of
the field (email-validator, phonenumbers); an IANA zone with zoneinfo.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from services.common import topics
from services.common.errors import Violations
from services.common.time_zones import is_valid_time_zone
from services.notify.domain.webhook_target import WebhookAllowList, url_refusal

NO_EXCEPTIONS = WebhookAllowList()


class Topic(enum.Enum):
    INFUSION_DUE = "INFUSION_DUE"
    APPOINTMENT_REMINDER = "APPOINTMENT_REMINDER"
    APPOINTMENT_CHANGED = "APPOINTMENT_CHANGED"
    MISSED_INFUSION = "MISSED_INFUSION"
    REORDER_DUE = "REORDER_DUE"
    LOW_STOCK = "LOW_STOCK"
    LOT_EXPIRING = "LOT_EXPIRING"
    LOT_RECALLED = "LOT_RECALLED"
    STOCK_AT_RISK = "STOCK_AT_RISK"
    OUTCOME_REVIEW_DUE = "OUTCOME_REVIEW_DUE"
    AUTHORISATION_EXPIRING = "AUTHORISATION_EXPIRING"
    BOARD_CHANGED = "BOARD_CHANGED"

    @property
    def critical(self) -> bool:
        """Critical topics cannot be switched off and ignore quiet hours."""
        return self in CRITICAL

    @property
    def signal(self) -> bool:
        """Stream-only signals: they exist for the Subscribe stream (a chair board told to
        refresh within a second of a change) and are never delivered by any channel, named or
        broadcast, whatever a subscriber's preferences say; one per booking change would
        otherwise flood every inbox. They carry ids only, so a caller that may subscribe but
        not read notifications sees them and nothing else (usecases/events.py)."""
        return self in SIGNALS


# the topic kinds the console shows too (services/common/topics.py); Topic(name) fails at import
# on a name that is not a topic
CRITICAL = frozenset(Topic(name) for name in topics.CRITICAL)
SIGNALS = frozenset(Topic(name) for name in topics.STREAM_ONLY)


class Channel(enum.Enum):
    EMAIL = "EMAIL"
    SMS = "SMS"
    WEBHOOK = "WEBHOOK"
    CONSOLE = "CONSOLE"


class Status(enum.Enum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    DELIVERED = "DELIVERED"
    TEMPORARY_FAILURE = "TEMPORARY_FAILURE"
    PERMANENT_FAILURE = "PERMANENT_FAILURE"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


OPEN = (Status.PENDING, Status.TEMPORARY_FAILURE)
"""Statuses a dispatcher may still claim (and a cancel may still stop)."""


class SubscriberKind(enum.Enum):
    """Staff opt in to broadcasts by topic and site; a patient receives only what names them:
    a broadcast (a reminder or a change sent to the site's staff) names some patient, and a
    patient must never see another patient's."""

    STAFF = "STAFF"
    PATIENT = "PATIENT"


@dataclass(frozen=True)
class QuietHours:
    start: dt.time
    end: dt.time


@dataclass(frozen=True)
class Subscriber:
    external_ref: str
    display_name: str
    time_zone: str
    email: str = ""
    phone: str = ""
    webhook_url: str = ""
    webhook_secret: str = ""
    # topic -> chosen channels (an empty tuple switches a non-critical topic off)
    preferences: Mapping[Topic, tuple[Channel, ...]] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    site_ids: tuple[str, ...] = ()
    kind: SubscriberKind | None = None  # required: None only until validated
    # the organisation it belongs to (docs/security.md, "Scope"): set by the service layer
    organisation_id: str = ""
    # the signed-in user (token subject) whose own subscriber this is; "" for the others
    user_subject: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def contact_channels(self) -> list[Channel]:
        """The channels this subscriber can be reached on, in a fixed order."""
        found = []
        if self.email:
            found.append(Channel.EMAIL)
        if self.phone:
            found.append(Channel.SMS)
        if self.webhook_url:
            found.append(Channel.WEBHOOK)
        return found

    def destination(self, channel: Channel) -> str:
        return {
            Channel.EMAIL: self.email,
            Channel.SMS: self.phone,
            Channel.WEBHOOK: self.webhook_url,
            Channel.CONSOLE: "console",
        }[channel]

    def channels_for(self, topic: Topic, *, named: bool) -> list[Channel]:
        """Channels for one notification. ``named``: the publisher listed this subscriber
        (otherwise it is a broadcast, which reaches only subscribers that opted in)."""
        if topic.signal:
            return []
        chosen = self.preferences.get(topic)
        if chosen is not None:
            return list(chosen)
        return self.contact_channels() if named else []

    def wants_broadcast(self, topic: Topic, sites: Iterable[str]) -> bool:
        """A broadcast reaches subscribers with a preference naming a channel for the topic
        whose site filter is empty or shares a site with the event; never patients."""
        if topic.signal or self.kind is SubscriberKind.PATIENT or not self.preferences.get(topic):
            return False
        site_set = set(sites)
        return not self.site_ids or not site_set or bool(site_set & set(self.site_ids))


def validate_subscriber(
    s: Subscriber,
    prefix: str = "subscriber",
    *,
    webhooks: WebhookAllowList | None = NO_EXCEPTIONS,
) -> Subscriber:
    """Every bad field of ``s`` at once (InvalidArgument); the normalised subscriber otherwise
    (email as email-validator normalises it, phone in E.164).

    ``webhooks``: the operator's allow-list the webhook target is checked against
    (webhook_target.py); None leaves the target unchecked, for a stored URL an update does not
    change (it is checked again at each delivery, so a URL refused since is dead-lettered
    there rather than blocking every other edit of the subscriber)."""
    v = Violations()
    email = s.email
    phone = s.phone
    if not s.display_name.strip():
        v.add(f"{prefix}.display_name", "is required")
    if s.kind is None:
        v.add(
            f"{prefix}.kind",
            "is required: STAFF receives the broadcasts its preferences ask for, PATIENT only "
            "the notifications that name it",
        )
    if len(s.display_name) > 200:
        v.add(f"{prefix}.display_name", "must be at most 200 characters")
    if len(s.external_ref) > 200:
        v.add(f"{prefix}.external_ref", "must be at most 200 characters")
    if not s.time_zone:
        v.add(f"{prefix}.time_zone", 'is required (an IANA zone such as "Europe/London")')
    elif not is_valid_time_zone(s.time_zone):
        v.add(f"{prefix}.time_zone", f"{s.time_zone!r} is not an IANA time zone")
    if s.email:
        try:
            email = validate_email(s.email, check_deliverability=False).normalized
        except EmailNotValidError as error:
            v.add(f"{prefix}.email", f"{s.email!r} is not a valid email address: {error}")
    if s.phone:
        phone = _e164(s.phone, f"{prefix}.phone", v)
    if s.webhook_url:
        parts = urlsplit(s.webhook_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            v.add(f"{prefix}.webhook_url", f"{s.webhook_url!r} is not an http(s) URL")
        elif webhooks is not None and (refusal := url_refusal(s.webhook_url, webhooks)):
            v.add(f"{prefix}.webhook_url", f"{s.webhook_url!r} {refusal}")
        if not s.webhook_secret:
            v.add(f"{prefix}.webhook_secret", "is required with a webhook_url (signs each POST)")
    elif s.webhook_secret:
        v.add(f"{prefix}.webhook_secret", "is only used with a webhook_url")
    if len(s.webhook_secret) > 200:
        v.add(f"{prefix}.webhook_secret", "must be at most 200 characters")
    available = set(s.contact_channels()) | {Channel.CONSOLE}
    for i, (topic, channels) in enumerate(s.preferences.items()):
        where = f"{prefix}.preferences[{i}]"
        if topic.critical and not channels:
            v.add(
                f"{where}.channels",
                f"{topic.value} is critical and cannot be switched off: name a channel, or "
                "leave the topic out to receive it on every contact point",
            )
        if topic.signal and channels:
            v.add(
                f"{where}.channels",
                f"{topic.value} is a stream-only signal (Subscribe): it is never delivered by "
                "a channel",
            )
            continue
        for j, channel in enumerate(channels):
            if channel not in available:
                v.add(
                    f"{where}.channels[{j}]",
                    f"{channel.value} is chosen but the subscriber has no {_CONTACT[channel]}",
                )
    if s.quiet_hours is not None and s.quiet_hours.start == s.quiet_hours.end:
        v.add(f"{prefix}.quiet_hours", "start and end must differ (leave unset for none)")
    for i, site in enumerate(s.site_ids):
        if not site or len(site) > 40:
            v.add(f"{prefix}.site_ids[{i}]", "must be a site id of 1–40 characters")
    v.raise_if_any()
    return Subscriber(
        external_ref=s.external_ref,
        display_name=s.display_name.strip(),
        time_zone=s.time_zone,
        email=email,
        phone=phone,
        webhook_url=s.webhook_url,
        webhook_secret=s.webhook_secret,
        preferences=dict(s.preferences),
        quiet_hours=s.quiet_hours,
        site_ids=tuple(dict.fromkeys(s.site_ids)),
        kind=s.kind,
        organisation_id=s.organisation_id,
        user_subject=s.user_subject,
    )


_CONTACT = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.WEBHOOK: "webhook_url"}


def _e164(text: str, field_path: str, v: Violations) -> str:
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        v.add(field_path, f"{text!r} is not a phone number in E.164 form (+ and country code)")
        return text
    if not phonenumbers.is_valid_number(number):
        v.add(field_path, f"{text!r} is not a valid phone number")
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def preference_list(
    items: Sequence[tuple[Topic, Sequence[Channel]]], prefix: str, v: Violations
) -> dict[Topic, tuple[Channel, ...]]:
    """Preferences as given (in order), refusing a topic named twice."""
    found: dict[Topic, tuple[Channel, ...]] = {}
    for i, (topic, channels) in enumerate(items):
        if topic in found:
            v.add(f"{prefix}[{i}].topic", f"{topic.value} is named twice")
            continue
        found[topic] = tuple(dict.fromkeys(channels))
    return found
