"""ListOutgoingEvents: the inventory's outbox as the caller's organisation may see it."""

from __future__ import annotations

from services.common.db import Database
from services.common.outbox import Outbox, OutgoingEvent
from services.inventory.store.site_scope import scoped_events


class OutgoingEvents:
    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db = db
        self.outbox = outbox

    def after(self, sequence: int, topic: str, size: int) -> list[OutgoingEvent]:
        """Up to ``size`` events after ``sequence`` (of ``topic`` when given), skipping other
        organisations' events."""
        with self.db.read() as session:
            return scoped_events(
                session,
                lambda after: self.outbox.list(session, after, topic, size),
                sequence,
                size,
            )
