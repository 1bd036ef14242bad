"""Events the scheduler owes notify, written to its outbox in the caller's transaction (the
jobs' notifications, and APPOINTMENT_CHANGED from bookings); the relay (adapters/notify_relay.py)
publishes them. The outbox's unique dedupe key makes a second write of one event a no-op.
Each row keeps the traceparent of the call or job that wrote it (services.common.outbox)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.common import tracing
from services.common.ids import new_id

PATIENT_COPY = ":patient"  # the dedupe-key suffix of the patient's own copy (addressed())


@dataclass(frozen=True)
class Event:
    topic: str
    dedupe_key: str
    payload: dict[str, Any]
    subscriber_ids: tuple[str, ...] = ()
    expires_at: dt.datetime | None = None


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def upsert_insert(session: Session) -> Any:
    """The dialect's insert, which has on_conflict_do_nothing."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def write_events(session: Session, table: Table, events: Iterable[Event], now: dt.datetime) -> int:
    """Append the events to the outbox in the caller's transaction, skipping dedupe keys
    already there (or written meanwhile by another replica); returns how many were new."""
    wanted = {e.dedupe_key: e for e in events}
    if not wanted:
        return 0
    keys = sorted(wanted)
    seen: set[str] = set()
    for part in chunks(keys, 500):
        seen.update(session.scalars(select(table.c.dedupe_key).where(table.c.dedupe_key.in_(part))))
    traceparent = tracing.current_traceparent()
    rows = [_outbox_row(wanted[k], now, traceparent) for k in keys if k not in seen]
    if not rows:
        return 0
    insert = upsert_insert(session)
    written = session.execute(
        insert(table)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(table.c.dedupe_key),  # only the rows inserted: not another replica's
        rows,
    )
    return len(written.all())


def outbox_rows(events: Iterable[Event], now: dt.datetime) -> list[dict[str, Any]]:
    """The outbox rows of ``events``, for a caller that inserts them itself (ON CONFLICT on
    the dedupe key doing nothing, as write_events does)."""
    traceparent = tracing.current_traceparent()
    return [_outbox_row(e, now, traceparent) for e in events]


def _outbox_row(event: Event, now: dt.datetime, traceparent: str | None) -> dict[str, Any]:
    expires = event.expires_at
    return {
        "id": new_id(),
        "topic": event.topic,
        "dedupe_key": event.dedupe_key,
        "payload": {
            "payload": event.payload,
            "subscriber_ids": list(event.subscriber_ids),
            "expires_at": expires.isoformat() if expires is not None else None,
        },
        "created_at": now,
        "attempts": 0,
        "last_error": "",
        "traceparent": traceparent,
    }


def board_changed(
    appointment_id: str,
    site_id: str,
    local_date: dt.date,
    status: str,
    revision: int,
    stock_status: str,
    *,
    previous_local_date: dt.date | None = None,
    key_suffix: str = "",
) -> Event:
    """BOARD_CHANGED: tells the site's chair boards (notify's Subscribe stream) to refresh the
    day. Ids only, never a name: every board at the site may see it, and notify never delivers
    it by a channel. Keyed by the revision that raised it (``key_suffix`` for a change that
    keeps the revision, such as the inventory's answer), so a retried call writes it once."""
    payload: dict[str, Any] = {
        "appointment_id": appointment_id,
        "site_id": site_id,
        "local_date": local_date.isoformat(),
        "status": status,
        "revision": revision,
        "stock_status": stock_status,
    }
    if previous_local_date is not None and previous_local_date != local_date:
        payload["previous_local_date"] = previous_local_date.isoformat()
    return Event("BOARD_CHANGED", f"BOARD_CHANGED:{appointment_id}:{revision}{key_suffix}", payload)


def addressed(
    topic: str, key: str, payload: dict[str, Any], subscriber: str, **extra: Any
) -> list[Event]:
    """The staff broadcast, plus the patient's own copy when they have a subscriber."""
    events = [Event(topic, key, payload, **extra)]
    if subscriber:
        events.append(Event(topic, key + PATIENT_COPY, payload, (subscriber,), **extra))
    return events
