"""Which events a Subscribe stream sends (EventLog.filter), without gRPC or a database: the
caller's organisation and sites, the topics asked for, the site, and the subscribers."""

from __future__ import annotations

import datetime as dt

from services.common.identity import Caller, acting_as
from services.notify.domain.model import Topic
from services.notify.domain.views import EventView, NotificationView
from services.notify.usecases.events import EventLog

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def event(
    org: str = "org-a",
    topic: Topic = Topic.LOW_STOCK,
    sites: tuple[str, ...] = ("s-1",),
    recipients: frozenset[str] = frozenset({"sub-1"}),
) -> EventView:
    notification = NotificationView(
        id="n-1",
        topic=topic,
        payload={},
        subscriber_ids=(),
        site_ids=sites,
        dedupe_key="",
        send_after=NOW,
        expires_at=None,
        created_at=NOW,
        cancelled_at=None,
        organisation_id=org,
    )
    return EventView(1, "PUBLISHED", NOW, notification, recipients)


def person(
    sites: frozenset[str] | None = None,
    permissions: frozenset[str] = frozenset({"notify.notifications.read"}),
) -> Caller:
    return Caller("u", "user", "org-a", sites, frozenset(), permissions)


def test_a_stream_sends_only_what_its_caller_may_see() -> None:
    with acting_as(person(sites=frozenset({"s-1"}))):
        matches = EventLog.filter(set(), "", ())
    assert matches(event())
    assert matches(event(sites=()))  # organisation-wide
    assert not matches(event(org="org-b"))
    assert not matches(event(sites=("s-2",)))


def test_topics_site_and_subscribers_narrow_the_stream() -> None:
    with acting_as(person()):
        by_topic = EventLog.filter({Topic.LOT_RECALLED}, "", ())
        by_site = EventLog.filter(set(), "s-2", ())
        by_subscriber = EventLog.filter(set(), "", ["sub-2"])
    assert by_topic(event(topic=Topic.LOT_RECALLED)) and not by_topic(event())
    assert by_site(event(sites=("s-1", "s-2"))) and not by_site(event())
    assert by_subscriber(event(recipients=frozenset({"sub-2"}))) and not by_subscriber(event())


def test_a_caller_who_may_not_read_notifications_gets_the_board_signal_only() -> None:
    """The nurse's board subscribes without notify.notifications.read: BOARD_CHANGED (ids
    only) reaches it, no other topic's payload (names, payers, recalls) does."""
    nurse = person(frozenset({"s-1"}), frozenset({"notify.notifications.subscribe"}))
    with acting_as(nurse):
        everything = EventLog.filter(set(), "", ())
        asked = EventLog.filter({Topic.APPOINTMENT_CHANGED, Topic.BOARD_CHANGED}, "s-1", ())
    assert everything(event(topic=Topic.BOARD_CHANGED))
    assert not everything(event(topic=Topic.APPOINTMENT_CHANGED))
    assert not everything(event(topic=Topic.LOT_RECALLED))
    assert asked(event(topic=Topic.BOARD_CHANGED))
    assert not asked(event(topic=Topic.APPOINTMENT_CHANGED))
    assert not everything(event(topic=Topic.BOARD_CHANGED, sites=("s-2",)))
    assert not everything(event(org="org-b", topic=Topic.BOARD_CHANGED))
