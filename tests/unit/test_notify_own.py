"""A user's own subscriber (services/notify/domain/own.py): what the user sets, what is kept or
given (kind, sites, organisation, webhook), the patient-name rule, and the text a user's list
shows for a notification."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from services.common.errors import InvalidArgument, PermissionDenied
from services.notify.domain.model import (
    Channel,
    QuietHours,
    Status,
    Subscriber,
    SubscriberKind,
    Topic,
    validate_subscriber,
)
from services.notify.domain.own import (
    NAMES_PATIENTS,
    READS_PATIENT_NAMES,
    MySettings,
    User,
    message_of,
    own_subscriber,
)
from services.notify.domain.views import DeliveryView

NURSE = User("nurse-a", "org-1", frozenset({"site-2", "site-1"}), frozenset({READS_PATIENT_NAMES}))
PHARMACIST = User("pharm-a", "org-1", None, frozenset({"inventory.stock.read"}))
SETTINGS = MySettings(
    time_zone="Europe/London",
    email="n@example.org",
    preferences={Topic.LOT_EXPIRING: (Channel.EMAIL,)},
    quiet_hours=QuietHours(dt.time(22), dt.time(7)),
)


def test_a_first_subscriber_is_the_users_staff_one_at_their_sites() -> None:
    made = own_subscriber(SETTINGS, NURSE, None)
    assert made.kind is SubscriberKind.STAFF
    assert made.user_subject == "nurse-a" and made.organisation_id == "org-1"
    assert made.site_ids == ("site-1", "site-2")  # the token's, not the user's to choose
    assert made.display_name == "nurse-a"  # the subject when no name is given
    assert made.external_ref == "user:nurse-a"
    assert validate_subscriber(made, "settings").preferences == SETTINGS.preferences
    # every site of the organisation: no site filter
    assert own_subscriber(SETTINGS, PHARMACIST, None).site_ids == ()


def test_what_is_not_the_users_is_kept() -> None:
    current = Subscriber(
        external_ref="staff-7",
        display_name="Nia",
        time_zone="UTC",
        webhook_url="https://hooks.example.org/n",
        webhook_secret="shh",
        kind=SubscriberKind.PATIENT,
        organisation_id="org-1",
        user_subject="nurse-a",
    )
    changed = own_subscriber(SETTINGS, NURSE, current)
    assert (changed.external_ref, changed.webhook_url, changed.webhook_secret) == (
        "staff-7",
        "https://hooks.example.org/n",
        "shh",
    )
    assert changed.kind is SubscriberKind.STAFF and changed.time_zone == "Europe/London"


def test_critical_topics_stay_on() -> None:
    off = MySettings(time_zone="UTC", preferences={Topic.STOCK_AT_RISK: ()})
    with pytest.raises(InvalidArgument) as refused:
        validate_subscriber(own_subscriber(off, NURSE, None), "settings")
    assert [v.field for v in refused.value.violations] == ["settings.preferences[0].channels"]


def test_topics_naming_patients_need_the_right_to_read_patient_names() -> None:
    assert Topic.LOT_RECALLED not in NAMES_PATIENTS and Topic.INFUSION_DUE in NAMES_PATIENTS
    wants = MySettings(
        time_zone="UTC",
        preferences={
            Topic.LOW_STOCK: (Channel.CONSOLE,),
            Topic.INFUSION_DUE: (Channel.CONSOLE,),
            Topic.MISSED_INFUSION: (),  # switching it off is anyone's
        },
    )
    with pytest.raises(InvalidArgument) as refused:
        own_subscriber(wants, PHARMACIST, None)
    assert [v.field for v in refused.value.violations] == ["settings.preferences[1].topic"]
    assert own_subscriber(wants, NURSE, None).preferences == wants.preferences


def test_tokens_that_cannot_own_a_subscriber_are_refused() -> None:
    for user in (
        User("x", "", None, frozenset()),  # no organisation
        User("x" * 256, "org-1", None, frozenset()),  # a subject longer than the column
        User("x", "org-1", frozenset(), frozenset()),  # no site: an empty filter is every site
    ):
        with pytest.raises(PermissionDenied):
            own_subscriber(SETTINGS, user, None)


def _delivery(channel: Channel, subject: str, text: str) -> DeliveryView:
    return DeliveryView(
        id="d",
        subscriber_id="s",
        channel=channel,
        destination="",
        status=Status.PENDING,
        next_attempt_at=None,
        attempts=(),
        delivered_at=None,
        last_error="",
        deferred=False,
        subject=subject,
        body_text=text,
    )


def test_the_list_shows_the_console_text_first_and_reads_a_webhooks_json() -> None:
    email = _delivery(Channel.EMAIL, "Lot expiring", "email text")
    console = _delivery(Channel.CONSOLE, "Lot expiring", "console text")
    hook = _delivery(Channel.WEBHOOK, "", json.dumps({"subject": "S", "text": "hook text"}))
    assert message_of([email, console]) == ("Lot expiring", "console text")
    assert message_of([hook, email]) == ("Lot expiring", "email text")
    assert message_of([hook]) == ("S", "hook text")
    assert message_of([_delivery(Channel.WEBHOOK, "", "not json")]) == ("", "")
    assert message_of([]) == ("", "")
