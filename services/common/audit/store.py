"""Where a service keeps its audit trail: one append-only table per service
(``<service>_audit_events``, so services may share a database), in sequence order.

Appending serialises on the chain's head for as short as possible: the writer takes a lock
(PostgreSQL: a transaction-level advisory lock keyed by the service, held by every replica
alike; SQLite: the database's write lock, which every write transaction takes at BEGIN), reads
the last record's sequence and hash, inserts and commits. The sequence is the primary key, so
two writers that somehow passed the lock together could not both append the same link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.orm import Session

from services.common.audit.record import GENESIS, AuditRecord
from services.common.db import UtcDateTime

READ_BATCH = 1000


def table_name(service: str) -> str:
    return f"{service}_audit_events"


def define_audit_table(metadata: MetaData, service: str) -> Table:
    """The trail's table. ``patient_ids`` is kept as text with a space around every id
    (" p1 p2 ") so "records naming this patient" is one portable LIKE on either database."""
    name = table_name(service)
    return Table(
        name,
        metadata,
        Column("sequence", BigInteger, primary_key=True, autoincrement=False),
        Column("occurred_at", UtcDateTime, nullable=False),
        Column("method", String(200), nullable=False),
        Column("kind", String(20), nullable=False),
        Column("resource_type", String(60), nullable=False),
        Column("resource_ids", JSON, nullable=False),
        Column("patient_ids", Text, nullable=False),
        Column("subject", String(256), nullable=False),
        Column("caller_kind", String(10), nullable=False),
        Column("client_id", String(256), nullable=False),
        Column("roles", JSON, nullable=False),
        Column("token_id", String(256), nullable=False),
        Column("organisation_id", String(100), nullable=False),
        Column("peer", String(300), nullable=False),
        Column("outcome", String(40), nullable=False),
        Column("request_id", String(128), nullable=False),
        Column("purpose", String(64), nullable=False),
        Column("previous_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
        Index(f"ix_{name}_organisation", "organisation_id", "sequence"),
        Index(f"ix_{name}_subject", "subject", "sequence"),
        Index(f"ix_{name}_occurred_at", "occurred_at"),
    )


def _lock_key(service: str) -> int:
    """A stable signed 64-bit advisory-lock key per service's chain."""
    return int.from_bytes(hashlib.sha256(f"audit:{service}".encode()).digest()[:8], signed=True)


@dataclass(frozen=True)
class AuditFilter:
    organisation_id: str | None  # None: every organisation's records
    patient_id: str = ""
    actor: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    after_sequence: int = 0


class AuditStore:
    def __init__(self, service: str, table: Table) -> None:
        self.service = service
        self.table = table
        self._lock_key = _lock_key(service)

    def append(self, session: Session, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """Link ``records`` after the chain's head and insert them, in ``session``'s
        transaction: they are stored exactly when it commits."""
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._lock_key})
        head = connection.execute(
            select(self.table.c.sequence, self.table.c.hash)
            .order_by(self.table.c.sequence.desc())
            .limit(1)
        ).first()
        sequence, previous = (head.sequence, head.hash) if head is not None else (0, GENESIS)
        linked = []
        for record in records:
            sequence += 1
            link = record.chained(sequence, previous)
            previous = link.hash
            linked.append(link)
        connection.execute(self.table.insert(), [self._row(r) for r in linked])
        return linked

    def _row(self, r: AuditRecord) -> dict[str, object]:
        return {
            "sequence": r.sequence,
            "occurred_at": r.occurred_at,
            "method": r.method,
            "kind": r.kind,
            "resource_type": r.resource_type,
            "resource_ids": list(r.resource_ids),
            "patient_ids": "".join(f" {p}" for p in r.patient_ids) + " ",
            "subject": r.subject,
            "caller_kind": r.caller_kind,
            "client_id": r.client_id,
            "roles": list(r.roles),
            "token_id": r.token_id,
            "organisation_id": r.organisation_id,
            "peer": r.peer,
            "outcome": r.outcome,
            "request_id": r.request_id,
            "purpose": r.purpose,
            "previous_hash": r.previous_hash,
            "hash": r.hash,
        }

    def _record(self, row: object) -> AuditRecord:
        m = row._mapping  # type: ignore[attr-defined]
        return AuditRecord(
            service=self.service,
            occurred_at=m["occurred_at"],
            method=m["method"],
            kind=m["kind"],
            resource_type=m["resource_type"],
            resource_ids=tuple(m["resource_ids"]),
            patient_ids=tuple(m["patient_ids"].split()),
            subject=m["subject"],
            caller_kind=m["caller_kind"],
            client_id=m["client_id"],
            roles=tuple(m["roles"]),
            token_id=m["token_id"],
            organisation_id=m["organisation_id"],
            peer=m["peer"],
            outcome=m["outcome"],
            request_id=m["request_id"],
            purpose=m["purpose"],
            sequence=m["sequence"],
            previous_hash=m["previous_hash"],
            hash=m["hash"],
        )

    def find(self, connection: Connection, where: AuditFilter, limit: int) -> list[AuditRecord]:
        """Records matching ``where`` in chain order, after ``where.after_sequence``."""
        t = self.table
        query = select(t).where(t.c.sequence > where.after_sequence)
        if where.organisation_id is not None:
            query = query.where(t.c.organisation_id == where.organisation_id)
        if where.patient_id:
            query = query.where(t.c.patient_ids.contains(f" {where.patient_id} ", autoescape=True))
        if where.actor:
            query = query.where(t.c.subject == where.actor)
        if where.start is not None:
            query = query.where(t.c.occurred_at >= where.start)
        if where.end is not None:
            query = query.where(t.c.occurred_at < where.end)
        rows = connection.execute(query.order_by(t.c.sequence).limit(limit))
        return [self._record(row) for row in rows]

    def walk(self, connection: Connection) -> Iterator[AuditRecord]:
        """Every record in chain order, a batch at a time."""
        after = 0
        while True:
            batch = self.find(connection, AuditFilter(None, after_sequence=after), READ_BATCH)
            yield from batch
            if len(batch) < READ_BATCH:
                return
            after = batch[-1].sequence
