"""The event log as the Subscribe stream reads it: the events after a cursor, the last
sequence (for the watcher that wakes streams when another replica writes), and which events a
stream's caller may see and asked for; and the step that places committed events in the stream.

``place`` runs after every Publish or Cancel commits, before it answers, so a caller that
subscribes after its Publish returned finds the event. Concurrent callers share one placement
(a group commit: whoever arrives while one runs is served by the next), so under load a
placement costs a fraction of a statement per call. Events whose writer stopped before placing
them are placed by the next placement of any process (and at start-up)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

from services.common.audit.group_commit import GroupCommit, WriteFailed
from services.common.db import Database
from services.common.identity import current_caller
from services.common.scope import current_scope
from services.notify.domain.model import Topic
from services.notify.domain.views import EventView
from services.notify.store import events

log = logging.getLogger(__name__)

READ = "notify.notifications.read"
"""Who holds it may read notifications' payloads; who may only subscribe (the staff whose
chair boards listen) gets the stream-only signals, which carry ids only."""


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        # a plain connection (no session: the audit hooks have nothing to record here), and on
        # SQLite a write transaction from its BEGIN
        self._placer = db.engine.execution_options(sqlite_immediate=True)
        self._placing: GroupCommit[None] = GroupCommit(self._place, linger=0)

    def place(self) -> None:
        """Place every committed event not yet placed (this caller's among them) in the stream.
        A failure is logged, not raised: the caller's change is committed, and the next
        placement picks its event up."""
        try:
            self._placing.submit(None)
        except WriteFailed:
            log.warning("events could not be placed in the stream yet", exc_info=True)

    def _place(self, _callers: Sequence[None]) -> None:
        with self._placer.begin() as connection:
            events.place(connection)

    def after(self, cursor: int, limit: int) -> list[EventView]:
        with self.db.read() as session:
            return events.after(session, cursor, limit)

    def last_sequence(self) -> int:
        with self.db.read() as session:
            return events.last_sequence(session)

    def poll(self) -> int:
        """The stream's last placed sequence, after placing any committed event left unplaced:
        a writer places its own event right after its commit, but one that stopped in between
        (killed, or its placement failed) leaves it for whoever looks next. The stream watcher
        polls this, so such an event reaches the streams within a poll, not at the next
        Publish (one indexed read when there is none)."""
        with self.db.read() as session:
            unplaced = events.any_unplaced(session)
        if unplaced:
            self.place()
        return self.last_sequence()

    @staticmethod
    def filter(
        topics: Collection[Topic], site_id: str, subscriber_ids: Collection[str]
    ) -> Callable[[EventView], bool]:
        """The events a stream sends: those of notifications the caller (the one calling now,
        whose scope is captured here) may see, of the topics asked for (all when none), at
        ``site_id`` when given, and concerning one of ``subscriber_ids`` when given. A caller
        without ``notify.notifications.read`` sees the stream-only signals only (Topic.signal):
        subscribing to a board's changes must not open every notification's payload (names,
        payers, recalls)."""
        scope = current_scope()
        reads = scope.unrestricted or READ in current_caller().permissions
        wanted = frozenset(subscriber_ids)

        def matches(e: EventView) -> bool:
            n = e.notification
            if not scope.sees(n.organisation_id) or not scope.sees_any_site(n.site_ids):
                return False
            if not reads and not n.topic.signal:
                return False
            if topics and n.topic not in topics:
                return False
            if site_id and site_id not in n.site_ids:
                return False
            return not wanted or bool(wanted & e.recipients)

        return matches
