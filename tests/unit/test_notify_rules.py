"""Notify's domain rules: contact-point validation, preferences, quiet hours across daylight-
saving changes, retry backoff, SMS length, templates, webhook signatures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
from zoneinfo import ZoneInfo

import pytest

from services.common.errors import InvalidArgument
from services.notify.adapters.channels import sign
from services.notify.domain.model import (
    Channel,
    QuietHours,
    Subscriber,
    SubscriberKind,
    Topic,
    validate_subscriber,
)
from services.notify.domain.sms import SEGMENT, fit_sms, gsm7_length
from services.notify.domain.templates import SMS_HIDDEN, Memo, Rendered, RenderError, Templates
from services.notify.domain.timing import backoff, quiet_until

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = QuietHours(dt.time(22, 0), dt.time(7, 0))


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]


def person(**fields: object) -> Subscriber:
    base: dict[str, object] = {
        "external_ref": "p-1",
        "display_name": "Alex",
        "time_zone": "Europe/London",
        "kind": SubscriberKind.STAFF,
    }
    base.update(fields)
    return Subscriber(**base)  # type: ignore[arg-type]


# --- subscribers --------------------------------------------------------------------------------


def test_valid_contact_points_are_normalised() -> None:
    s = validate_subscriber(
        person(
            email="Alex@Example.ORG",
            phone="+44 7911 123456",
            webhook_url="https://h.example/x",
            webhook_secret="s3cret",
        )
    )
    assert s.phone == "+447911123456"
    assert s.email == "Alex@example.org"  # the domain part is normalised
    assert s.contact_channels() == [Channel.EMAIL, Channel.SMS, Channel.WEBHOOK]


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_subscriber(
            person(
                display_name="",
                time_zone="Mars/Olympus",
                email="not-an-address",
                phone="07911 123456",  # no country code: not E.164
                webhook_url="ftp://files.example/hook",
                webhook_secret="",
            )
        )
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "subscriber.display_name",
        "subscriber.time_zone",
        "subscriber.email",
        "subscriber.phone",
        "subscriber.webhook_url",
        "subscriber.webhook_secret",
    }


def test_critical_topics_cannot_be_switched_off() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_subscriber(person(email="a@example.org", preferences={Topic.LOT_RECALLED: ()}))
    assert caught.value.violations[0].field == "subscriber.preferences[0].channels"
    # a non-critical topic may be switched off
    validate_subscriber(person(email="a@example.org", preferences={Topic.LOW_STOCK: ()}))


def test_a_preferred_channel_needs_its_contact_point() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_subscriber(
            person(email="a@example.org", preferences={Topic.LOW_STOCK: (Channel.SMS,)})
        )
    assert caught.value.violations[0].field == "subscriber.preferences[0].channels[0]"


def test_channels_for_named_and_broadcast_recipients() -> None:
    s = person(
        email="a@example.org",
        phone="+447911123456",
        preferences={Topic.LOW_STOCK: (Channel.EMAIL,), Topic.INFUSION_DUE: ()},
        site_ids=("site-1",),
    )
    assert s.channels_for(Topic.LOW_STOCK, named=True) == [Channel.EMAIL]
    assert s.channels_for(Topic.INFUSION_DUE, named=True) == []  # switched off
    assert s.channels_for(Topic.APPOINTMENT_REMINDER, named=True) == [Channel.EMAIL, Channel.SMS]
    assert s.channels_for(Topic.APPOINTMENT_REMINDER, named=False) == []  # broadcasts opt in
    assert s.wants_broadcast(Topic.LOW_STOCK, ["site-1"])
    assert not s.wants_broadcast(Topic.LOW_STOCK, ["site-2"])
    assert not s.wants_broadcast(Topic.REORDER_DUE, ["site-1"])
    patient = dataclasses.replace(s, kind=SubscriberKind.PATIENT)
    assert not patient.wants_broadcast(Topic.LOW_STOCK, ["site-1"])  # never another's news
    assert patient.channels_for(Topic.LOW_STOCK, named=True) == [Channel.EMAIL]


# --- quiet hours --------------------------------------------------------------------------------


def test_outside_quiet_hours_nothing_moves() -> None:
    noon = utc(2026, 6, 1, 11, 0)
    assert quiet_until(noon, LONDON, NIGHT) == noon
    assert quiet_until(noon, LONDON, None) == noon


def test_evening_and_early_morning_parts_of_a_night_window() -> None:
    # 23:30 BST on 1 June -> 07:00 BST on 2 June (06:00 UTC)
    assert quiet_until(utc(2026, 6, 1, 22, 30), LONDON, NIGHT) == utc(2026, 6, 2, 6, 0)
    # 05:00 BST -> 07:00 BST the same morning
    assert quiet_until(utc(2026, 6, 2, 4, 0), LONDON, NIGHT) == utc(2026, 6, 2, 6, 0)


def test_a_window_within_one_day() -> None:
    lunch = QuietHours(dt.time(12, 0), dt.time(14, 0))
    assert quiet_until(utc(2026, 1, 5, 12, 30), LONDON, lunch) == utc(2026, 1, 5, 14, 0)
    assert quiet_until(utc(2026, 1, 5, 14, 0), LONDON, lunch) == utc(2026, 1, 5, 14, 0)


def test_quiet_hours_across_the_spring_forward_change() -> None:
    # London 2026-03-29 01:00 GMT -> 02:00 BST. 23:00 GMT on the 28th is in quiet hours; the
    # night ends at 07:00 *local* (BST) = 06:00 UTC: 7 real hours later, not 8.
    start = utc(2026, 3, 28, 23, 0)
    released = quiet_until(start, LONDON, NIGHT)
    assert released == utc(2026, 3, 29, 6, 0)
    assert released.astimezone(LONDON).hour == 7
    assert released - start == dt.timedelta(hours=7)


def test_quiet_hours_across_the_fall_back_change() -> None:
    # London 2026-10-25 02:00 BST -> 01:00 GMT: the night from 23:00 BST lasts 9 real hours.
    start = utc(2026, 10, 24, 22, 0)  # 23:00 BST
    released = quiet_until(start, LONDON, NIGHT)
    assert released == utc(2026, 10, 25, 7, 0)
    assert released.astimezone(LONDON).hour == 7
    assert released - start == dt.timedelta(hours=9)


def test_quiet_hours_ending_inside_a_skipped_hour() -> None:
    # New York 2026-03-08 02:00 EST -> 03:00 EDT; a quiet period ending at 02:30 (which does not
    # exist that night) releases at the first instant after the gap.
    window = QuietHours(dt.time(22, 0), dt.time(2, 30))
    released = quiet_until(utc(2026, 3, 8, 4, 0), NEW_YORK, window)  # 23:00 EST on the 7th
    assert released.astimezone(NEW_YORK).replace(tzinfo=None) == dt.datetime(2026, 3, 8, 3, 30)
    assert released > utc(2026, 3, 8, 4, 0)


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_doubles_caps_and_jitters() -> None:
    base, cap = dt.timedelta(seconds=30), dt.timedelta(minutes=10)
    full = [backoff(n, base=base, cap=cap, jitter=1.0) for n in range(1, 8)]
    assert [d.total_seconds() for d in full] == [30, 60, 120, 240, 480, 600, 600]
    assert backoff(3, base=base, cap=cap, jitter=0.0) == dt.timedelta(seconds=60)  # floor 0.5
    assert backoff(3, base=base, cap=cap, jitter=0.75) == dt.timedelta(seconds=90)


# --- SMS ----------------------------------------------------------------------------------------


def test_gsm7_length_counts_extension_characters_twice() -> None:
    assert gsm7_length("Hello") == 5
    assert gsm7_length("€[x]") == 7
    assert gsm7_length("emoji 🙂") is None


def test_fit_sms_normalises_and_cuts_to_one_segment() -> None:
    assert fit_sms("It\u2019s \u201cdue\u201d \u2013 soon") == 'It\'s "due" - soon'
    long = fit_sms("word " * 60)
    assert gsm7_length(long) is not None and (gsm7_length(long) or 0) <= SEGMENT
    assert long.endswith("...")


# --- templates ----------------------------------------------------------------------------------

SAMPLES: dict[Topic, dict[str, object]] = {
    Topic.INFUSION_DUE: {
        "patient_id": "p1",
        "site_id": "s1",
        "therapy_plan_id": "tp1",
        "due_date": dt.date(2026, 12, 1),
        "window_opens": dt.date(2026, 11, 28),
        "window_closes": dt.date(2026, 12, 5),
        "patient_name": "Alex",
    },
    Topic.APPOINTMENT_REMINDER: {
        "appointment_id": "a1",
        "patient_id": "p1",
        "site_id": "s1",
        "site_name": "Royal Free Hospital Immunology Day Case Unit",
        "start_time": utc(2026, 11, 26, 9, 30),
        "time_zone": "Europe/London",
        "patient_name": "Alex",
        "product_brand": "Privigen",
    },
    Topic.APPOINTMENT_CHANGED: {
        "appointment_id": "a1",
        "patient_id": "p1",
        "site_id": "s1",
        "site_name": "Day Unit",
        "start_time": utc(2026, 11, 27, 9, 30),
        "previous_start_time": utc(2026, 11, 26, 9, 30),
        "time_zone": "Europe/London",
        "cancelled": False,
        "patient_name": "Alex",
    },
    Topic.MISSED_INFUSION: {
        "appointment_id": "a1",
        "patient_id": "p1",
        "site_id": "s1",
        "site_name": "Day Unit",
        "start_time": utc(2026, 11, 26, 9, 30),
        "time_zone": "Europe/London",
        "patient_name": "Alex",
    },
    Topic.REORDER_DUE: {
        "site_id": "s1",
        "product_id": "privigen",
        "product_code": "privigen",
        "brand": "Privigen",
        "as_of": dt.date(2026, 11, 24),
        "presentation_grams": "10",
        "vials": 12,
        "grams": "120",
        "estimated_cost": "5400 GBP",
        "stockout_date": dt.date(2026, 12, 10),
        "order_by_date": dt.date(2026, 12, 3),
        "reason": "cover 4 weeks of demand",
    },
    Topic.LOW_STOCK: {
        "site_id": "s1",
        "product_id": "privigen",
        "product_code": "privigen",
        "brand": "Privigen",
        "as_of": dt.date(2026, 11, 24),
        "available_grams": "40",
        "safety_stock_grams": "100",
        "message": "Privigen low",
    },
    Topic.LOT_EXPIRING: {
        "site_id": "s1",
        "lot_id": "l1",
        "product_id": "privigen",
        "lot_number": "P123",
        "expiry_date": dt.date(2026, 12, 20),
        "days_left": 26,
        "threshold_days": 30,
        "on_hand_vials": 5,
        "reserved_vials": 1,
    },
    Topic.LOT_RECALLED: {
        "product_id": "privigen",
        "brand": "Privigen",
        "lot_number": "P123",
        "reason": "<b>particulates</b> & haze",
        "sites": ["s1", "s2"],
        "recipients": [
            {
                "patient_id": "p1",
                "appointment_id": "a1",
                "site_id": "s1",
                "administered_time": utc(2026, 11, 1, 10, 0),
                "grams": "30",
            }
        ],
    },
    Topic.STOCK_AT_RISK: {
        "reservation_id": "r1",
        "appointment_id": "a1",
        "patient_id": "p1",
        "site_id": "s1",
        "product_id": "privigen",
        "grams": "30",
        "needed_on": dt.date(2026, 11, 30),
        "reason": "primary immunodeficiency dose short",
        "cause": "RECALLED",
    },
    Topic.OUTCOME_REVIEW_DUE: {
        "patient_id": "p1",
        "site_id": "s1",
        "therapy_plan_id": "tp1",
        "due_date": dt.date(2027, 6, 1),
        "patient_name": "Alex",
    },
    Topic.AUTHORISATION_EXPIRING: {
        "patient_id": "p1",
        "site_id": "s1",
        "therapy_plan_id": "tp1",
        "authorisation_id": "au1",
        "payer": "Acme Health",
        "valid_to": dt.date(2026, 12, 20),
        "days_left": 26,
        "patient_name": "Alex",
    },
    Topic.BOARD_CHANGED: {
        "appointment_id": "a1",
        "site_id": "s1",
        "local_date": dt.date(2026, 12, 3),
        "status": "BOOKED",
        "revision": 1,
        "stock_status": "",
    },
}
BRANDS = ("Privigen", "privigen", "particulates", "immunodeficiency")


@pytest.mark.parametrize("topic", list(Topic))
def test_every_topic_renders_every_channel(topic: Topic) -> None:
    templates = Templates()
    payload = SAMPLES[topic]
    for channel in Channel:
        r = templates.render(
            topic,
            channel,
            payload,
            payload_field="payload.x",
            zone="Europe/London",
            display_name="Pat",
        )
        assert r.text.strip()
        if channel is Channel.EMAIL:
            assert r.subject and "<html>" in r.html and "Pat" in r.html
    sms = templates.render(
        topic, Channel.SMS, payload, payload_field="p", zone="Europe/London", display_name="Pat"
    ).text
    assert (gsm7_length(sms) or 999) <= SEGMENT, sms
    for word in BRANDS:
        assert word not in sms, (word, sms)


def test_a_publish_renders_a_recipient_independent_text_once() -> None:
    """With one memo (a Publish's), a template that reads neither the zone nor the subscriber
    renders once for every recipient; one that reads the zone, once per zone; the HTML part,
    which extends the layout (it names the subscriber), once per zone and name. The texts are
    those rendered without a memo."""
    rendered: list[str] = []

    def seen(value: object, name: str) -> object:
        rendered.append(name)
        return value

    templates = Templates(
        overrides={
            "LOT_EXPIRING/email_subject.txt": "Lot {{ p.lot_number | seen('subject') }}",
            "LOT_EXPIRING/email_text.txt": "{{ p.lot_number | seen('text') }} in {{ zone }}",
        }
    )
    templates.env.filters["seen"] = seen
    recipients = [("Europe/London", "Pat"), ("Europe/London", "Sam"), ("Europe/Paris", "Pat")]

    def each(memo: Memo | None) -> list[Rendered]:
        return [
            templates.render(
                Topic.LOT_EXPIRING,
                Channel.EMAIL,
                SAMPLES[Topic.LOT_EXPIRING],
                payload_field="payload.lot_expiring",
                zone=zone,
                display_name=name,
                memo=memo,
            )
            for zone, name in recipients
        ]

    memo: Memo = {}
    with_memo = each(memo)
    assert sorted(rendered) == ["subject", "text", "text"]
    assert len([key for key in memo if key[0] == "LOT_EXPIRING/email.html"]) == 3
    without = each(None)
    assert with_memo == without
    assert "Sam" in with_memo[1].html and "Europe/Paris" in with_memo[2].text


def test_local_times_in_messages_follow_the_zone() -> None:
    r = Templates().render(
        Topic.APPOINTMENT_REMINDER,
        Channel.SMS,
        SAMPLES[Topic.APPOINTMENT_REMINDER],
        payload_field="p",
        zone="Europe/London",
        display_name="",
    )
    assert "Thu 26 Nov 2026 09:30 GMT" in r.text
    summer = dict(SAMPLES[Topic.APPOINTMENT_REMINDER], start_time=utc(2026, 6, 25, 8, 30))
    r = Templates().render(
        Topic.APPOINTMENT_REMINDER,
        Channel.SMS,
        summer,
        payload_field="p",
        zone="Europe/London",
        display_name="",
    )
    assert "Thu 25 Jun 2026 09:30 BST" in r.text


def test_html_is_autoescaped_and_text_is_not() -> None:
    r = Templates().render(
        Topic.LOT_RECALLED,
        Channel.EMAIL,
        SAMPLES[Topic.LOT_RECALLED],
        payload_field="p",
        zone="UTC",
        display_name="<Pat>",
    )
    assert "&lt;b&gt;particulates&lt;/b&gt; &amp; haze" in r.html
    assert "&lt;Pat&gt;" in r.html
    assert "<b>particulates</b> & haze" in r.text


def test_sms_templates_never_see_product_or_clinical_fields() -> None:
    leaky = Templates(overrides={"LOW_STOCK/sms.txt": "{{ p.brand }}"})
    with pytest.raises(RenderError):
        leaky.render(
            Topic.LOW_STOCK,
            Channel.SMS,
            SAMPLES[Topic.LOW_STOCK],
            payload_field="payload.low_stock",
            zone="UTC",
            display_name="",
        )
    assert {"brand", "product_brand", "reason", "diagnosis"} <= SMS_HIDDEN


def test_a_missing_required_field_names_the_field() -> None:
    payload = dict(SAMPLES[Topic.LOT_EXPIRING], lot_number="")
    with pytest.raises(RenderError) as caught:
        Templates().render(
            Topic.LOT_EXPIRING,
            Channel.EMAIL,
            payload,
            payload_field="payload.lot_expiring",
            zone="UTC",
            display_name="",
        )
    assert caught.value.field == "payload.lot_expiring.lot_number"


def test_a_broken_override_is_a_render_error() -> None:
    broken = Templates(overrides={"LOW_STOCK/email_text.txt": "{{ p.brand | nosuchfilter }}"})
    with pytest.raises(RenderError) as caught:
        broken.render(
            Topic.LOW_STOCK,
            Channel.EMAIL,
            SAMPLES[Topic.LOW_STOCK],
            payload_field="payload.low_stock",
            zone="UTC",
            display_name="",
        )
    assert caught.value.field == "payload.low_stock"


def test_webhook_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", "1700000000", body) == f"sha256={expected}"


# -- stream-only signals (BOARD_CHANGED) ----------------------------------------------------------


def test_a_signal_reaches_no_channel_named_or_broadcast() -> None:
    """One per booking change: delivered by a channel it would flood every inbox, so no
    subscriber's contact points or preferences make it a delivery."""
    everywhere = {t: (Channel.EMAIL,) for t in Topic if not t.signal}
    s = Subscriber(
        "ref",
        "Ward",
        "Europe/London",
        email="ward@example.org",
        phone="+447700900123",
        preferences=everywhere,
        kind=SubscriberKind.STAFF,
    )
    assert Topic.BOARD_CHANGED.signal and not Topic.APPOINTMENT_CHANGED.signal
    assert s.channels_for(Topic.BOARD_CHANGED, named=True) == []
    assert s.channels_for(Topic.BOARD_CHANGED, named=False) == []
    assert not s.wants_broadcast(Topic.BOARD_CHANGED, ["s1"])
    loud = dataclasses.replace(s, preferences={Topic.BOARD_CHANGED: (Channel.CONSOLE,)})
    assert not loud.wants_broadcast(Topic.BOARD_CHANGED, ["s1"])


def test_a_preference_naming_a_channel_for_a_signal_is_refused() -> None:
    s = Subscriber(
        "ref",
        "Ward",
        "Europe/London",
        email="ward@example.org",
        preferences={Topic.BOARD_CHANGED: (Channel.EMAIL,)},
        kind=SubscriberKind.STAFF,
    )
    with pytest.raises(InvalidArgument) as refused:
        validate_subscriber(s)
    assert "stream-only" in str(refused.value.violations)
    quiet = dataclasses.replace(s, preferences={Topic.BOARD_CHANGED: ()})
    assert validate_subscriber(quiet).preferences == {Topic.BOARD_CHANGED: ()}
