"""Transactional outbox: an event a service owes another is a row written in the same
transaction as the change that causes it, so both commit or neither does: a
booking never fails because another service is down. A relay (each service's notify_relay.py,
the scheduler's inventory_relay.py) delivers rows in ``seq`` order (several at once; in turn where
their order matters, services.common.outbox_relay), using the row
id as the receiver's request_id; a dedupe key makes an event that may be raised many times
(LOT_EXPIRING at 30 days, LOW_STOCK today) be written once.

Each row keeps the W3C ``traceparent`` of the call or job that wrote it (when tracing is on),
so its delivery joins that trace (services.common.tracing). A partial index holds the
undelivered rows only: the relay's claim and the backlog gauges read it, however many
delivered rows the table keeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common import tracing
from services.common.db import UtcDateTime
from services.common.ids import new_id

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


def define_outbox_table(metadata: MetaData, service: str) -> Table:
    """Named per service so services may share one database without colliding."""
    return Table(
        f"{service}_outbox",
        metadata,
        Column("seq", _SEQ, primary_key=True, autoincrement=True),
        Column("id", String(40), nullable=False, unique=True),
        Column("topic", String(40), nullable=False),
        Column("dedupe_key", String(200), nullable=True, unique=True),
        Column("payload", JSON, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        Column("delivered_at", UtcDateTime(), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", String(1000), nullable=False, default=""),
        Column("traceparent", String(55), nullable=True),
        Index(
            f"ix_{service}_outbox_undelivered",
            "seq",
            postgresql_where=text("delivered_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL"),
        ),
    )


@dataclass(frozen=True)
class OutgoingEvent:
    seq: int
    id: str
    topic: str
    dedupe_key: str
    payload: dict[str, Any]
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    traceparent: str | None = None  # of the call or job that wrote it


class Outbox:
    def __init__(self, table: Table) -> None:
        self.table = table

    def emit(
        self,
        session: Session,
        topic: str,
        payload: Mapping[str, Any],
        now: dt.datetime,
        dedupe_key: str | None = None,
    ) -> bool:
        """Write the event in the caller's transaction; False if its dedupe key was seen."""
        if (
            dedupe_key is not None
            and session.execute(
                select(self.table.c.seq).where(self.table.c.dedupe_key == dedupe_key)
            ).first()
        ):
            return False
        try:
            with session.begin_nested():
                session.execute(
                    self.table.insert().values(
                        id=new_id(),
                        topic=topic,
                        dedupe_key=dedupe_key,
                        payload=dict(payload),
                        created_at=now,
                        attempts=0,
                        last_error="",
                        traceparent=tracing.current_traceparent(),
                    )
                )
        except IntegrityError:  # the same key written by a concurrent transaction
            return False
        return True

    def list(
        self, session: Session, after_seq: int, topic: str = "", limit: int = 100
    ) -> list[OutgoingEvent]:
        t = self.table
        query = select(t).where(t.c.seq > after_seq)
        if topic:
            query = query.where(t.c.topic == topic)
        rows = session.execute(query.order_by(t.c.seq).limit(limit))
        return [outgoing(r) for r in rows]


def outgoing(row: Any) -> OutgoingEvent:
    """An outbox row as the relay hands it to ``deliver``."""
    return OutgoingEvent(
        row.seq,
        row.id,
        row.topic,
        row.dedupe_key or "",
        row.payload,
        row.created_at,
        row.delivered_at,
        row.traceparent,
    )
