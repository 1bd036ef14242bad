"""A signed-in user's own subscriber: what they may set of it themselves (notify.self.manage).

The user is the token's subject within its organisation; their subscriber is a STAFF one that
receives the broadcasts of their own sites only (the token's), and a topic whose messages name
patients can be switched on only by a user whose roles read patient names. Everything else
(kind, sites, organisation, external reference, webhook) is not theirs to set: it is kept, or
given here when the subscriber is first made. Pure: no gRPC, no SQL.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from services.common.errors import PermissionDenied, Violations
from services.notify.domain.model import (
    Channel,
    QuietHours,
    Subscriber,
    SubscriberKind,
    Topic,
)
from services.notify.domain.views import DeliveryView

# Topics whose messages carry a patient's name (their payloads' patient_name).
NAMES_PATIENTS = frozenset(
    {
        Topic.INFUSION_DUE,
        Topic.APPOINTMENT_REMINDER,
        Topic.APPOINTMENT_CHANGED,
        Topic.MISSED_INFUSION,
        Topic.OUTCOME_REVIEW_DUE,
        Topic.AUTHORISATION_EXPIRING,
    }
)
READS_PATIENT_NAMES = "scheduler.patients.read"
MAX_SUBJECT = 255  # the user_subject column


@dataclass(frozen=True)
class MySettings:
    """What a user sets of their own subscriber (MyNotificationSettings)."""

    display_name: str = ""
    time_zone: str = ""
    email: str = ""
    phone: str = ""
    preferences: Mapping[Topic, tuple[Channel, ...]] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True)
class User:
    """The caller as notify.self.manage sees it: a person of an organisation."""

    subject: str
    organisation_id: str
    site_ids: frozenset[str] | None  # None: every site of the organisation
    permissions: frozenset[str]


def check_user(user: User) -> None:
    """PERMISSION_DENIED for a token that cannot own a subscriber."""
    if not user.organisation_id:
        raise PermissionDenied("one's own notification settings need a person's token")
    if len(user.subject) > MAX_SUBJECT:
        raise PermissionDenied(f"the token's subject is longer than {MAX_SUBJECT} characters")


def own_subscriber(
    settings: MySettings, user: User, current: Subscriber | None, prefix: str = "settings"
) -> Subscriber:
    """The user's subscriber with ``settings`` applied (not yet validated: the caller runs
    validate_subscriber). INVALID_ARGUMENT when a topic that names patients is switched on by a
    user whose roles read no patient names; PERMISSION_DENIED when the token names no site (an
    empty site filter would mean every site)."""
    check_user(user)
    if user.site_ids is not None and not user.site_ids:
        raise PermissionDenied("the token names no site, so no broadcast can be chosen for it")
    v = Violations()
    for i, (topic, channels) in enumerate(settings.preferences.items()):
        if channels and topic in NAMES_PATIENTS and READS_PATIENT_NAMES not in user.permissions:
            v.add(
                f"{prefix}.preferences[{i}].topic",
                f"{topic.value} messages name patients and your roles do not read patient "
                f"names ({READS_PATIENT_NAMES}): leave it off",
            )
    v.raise_if_any()
    base = current or Subscriber(
        external_ref=f"user:{user.subject}"[:200],
        display_name="",
        time_zone="",
    )
    return replace(
        base,
        display_name=settings.display_name.strip() or user.subject[:200],
        time_zone=settings.time_zone,
        email=settings.email,
        phone=settings.phone,
        preferences=dict(settings.preferences),
        quiet_hours=settings.quiet_hours,
        site_ids=_sites(user.site_ids),
        kind=SubscriberKind.STAFF,
        organisation_id=user.organisation_id,
        user_subject=user.subject,
    )


def _sites(site_ids: Collection[str] | None) -> tuple[str, ...]:
    return () if site_ids is None else tuple(sorted(site_ids))


# The rendering a user's list shows: the console's plain text first, a webhook's last (its body
# is the JSON it posts, whose "subject" and "text" are that same rendering).
_SHOWN_FIRST = (Channel.CONSOLE, Channel.EMAIL, Channel.SMS, Channel.WEBHOOK)


def message_of(deliveries: Sequence[DeliveryView]) -> tuple[str, str]:
    """(subject, text) of a notification as its recipient's deliveries rendered it; empty when
    there is none."""
    for channel in _SHOWN_FIRST:
        for d in deliveries:
            if d.channel is not channel:
                continue
            if channel is not Channel.WEBHOOK:
                return d.subject, d.body_text
            try:
                posted = json.loads(d.body_text)
            except ValueError:
                continue
            return str(posted.get("subject", "")), str(posted.get("text", ""))
    return "", ""
