"""The event log as the Subscribe stream reads it: the events after a cursor, the last
sequence (for the watcher that wakes streams when another replica writes), and which events a
stream's caller may see and asked for."""

from __future__ import annotations

from collections.abc import Callable, Collection

from services.common.db import Database
from services.common.scope import current_scope
from services.notify.domain.model import Topic
from services.notify.domain.views import EventView
from services.notify.store import events


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def after(self, cursor: int, limit: int) -> list[EventView]:
        with self.db.read() as session:
            return events.after(session, cursor, limit)

    def last_sequence(self) -> int:
        with self.db.read() as session:
            return events.last_sequence(session)

    @staticmethod
    def filter(
        topics: Collection[Topic], site_id: str, subscriber_ids: Collection[str]
    ) -> Callable[[EventView], bool]:
        """The events a stream sends: those of notifications the caller (the one calling now,
        whose scope is captured here) may see, of the topics asked for (all when none), at
        ``site_id`` when given, and concerning one of ``subscriber_ids`` when given."""
        scope = current_scope()
        wanted = frozenset(subscriber_ids)

        def matches(e: EventView) -> bool:
            n = e.notification
            if not scope.sees(n.organisation_id) or not scope.sees_any_site(n.site_ids):
                return False
            if topics and n.topic not in topics:
                return False
            if site_id and site_id not in n.site_ids:
                return False
            return not wanted or bool(wanted & e.recipients)

        return matches
