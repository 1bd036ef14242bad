"""Where a service keeps its audit trail: three tables per service (prefixed with the service,
so services may share a database).

- ``<service>_audit_events``: the records, append-only. A record is inserted in the
  transaction it records (a mutation's own) without any lock, so writing it costs a mutation
  one insert and serialises nothing.
- ``<service>_audit_pending``: the id of each record not yet in the chain, inserted with it.
- ``<service>_audit_chain``: the hash chain, append-only: link ``n`` names a record and holds
  the previous link's hash and the hash of (its record, ``n``, that previous hash). The linker
  (:mod:`services.common.audit.linker`) appends links for pending records in batches and
  deletes their pending rows in the same transaction.

Linking serialises on the chain's head, for one short transaction per batch: the linker takes
a lock (PostgreSQL: a transaction-level advisory lock keyed by the service, so replicas sharing
the database take turns; SQLite: the database's write lock, which every write transaction takes
at BEGIN), reads the last link, inserts the new ones and commits. The sequence is the chain's
primary key and a record can be linked once (unique), so no race can fork the chain or link a
record twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Dialect,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
)

from services.common.audit.record import GENESIS, AuditRecord, content_hash, link_hash
from services.common.db import Rider, UtcDateTime

log = logging.getLogger(__name__)

READ_BATCH = 1000


def table_names(service: str) -> tuple[str, str, str]:
    """(events, chain, pending)."""
    return (f"{service}_audit_events", f"{service}_audit_chain", f"{service}_audit_pending")


@dataclass(frozen=True)
class AuditTables:
    events: Table
    chain: Table
    pending: Table


def define_audit_tables(metadata: MetaData, service: str) -> AuditTables:
    """``patient_ids`` is kept as text with a space around every id (" p1 p2 ") so "records
    naming this patient" is one portable LIKE on either database."""
    events, chain, pending = table_names(service)
    return AuditTables(
        Table(
            events,
            metadata,
            Column("id", String(40), primary_key=True),
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
            # the content hash the record was linked with (verify recomputes it, never trusts it)
            Column("content_hash", String(64), nullable=False),
            # an auditor's queries are within an organisation; the other filters scan its
            # records (writes are the hot path: an index fewer is a page fewer per commit)
            Index(f"ix_{events}_organisation", "organisation_id", "id"),
        ),
        Table(
            chain,
            metadata,
            Column("sequence", BigInteger, primary_key=True, autoincrement=False),
            Column("event_id", String(40), nullable=False),
            Column("previous_hash", String(64), nullable=False),
            Column("hash", String(64), nullable=False),
            UniqueConstraint("event_id", name=f"uq_{chain}_event_id"),
        ),
        Table(pending, metadata, Column("event_id", String(40), primary_key=True)),
    )


def _one(name: str) -> Callable[[dict[str, Any]], tuple[Any]]:
    """``itemgetter`` of one name returns the value, not a 1-tuple."""
    return lambda row: (row[name],)


class _DriverInsert:
    """One table's INSERT compiled once per dialect and sent to the driver as it is
    (``exec_driver_sql``, an executemany of values already through the columns' bind
    processors): records are written on every audited call, and compiling and processing a
    Core insert per commit cost about as much as the commit itself."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        compiled = table.insert().compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.names = list(compiled.positiontup or ()) if self.positional else list(compiled.params)
        processors = [
            table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.names
        ]
        # the columns' values in one C call, then only those with a processor are touched:
        # a generator over every column cost about 1 µs a column a row
        self._get = itemgetter(*self.names) if len(self.names) > 1 else _one(self.names[0])
        self._processed = [(i, p) for i, p in enumerate(processors) if p is not None]

    def values(self, rows: Sequence[dict[str, Any]]) -> Any:
        """``rows`` as the driver takes them: through the bind processors, in the statement's
        parameter style."""
        out = []
        for row in rows:
            value = list(self._get(row))
            for i, process in self._processed:
                value[i] = process(value[i])
            out.append(
                tuple(value) if self.positional else dict(zip(self.names, value, strict=True))
            )
        return out

    def execute(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
        connection.exec_driver_sql(self.sql, self.values(rows))


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
    after_id: str = ""


@dataclass(frozen=True)
class Link:
    """One link of the chain as stored, with its record (None: the record is gone)."""

    sequence: int
    event_id: str
    previous_hash: str
    hash: str
    record: AuditRecord | None


class AuditStore:
    def __init__(self, service: str, tables: AuditTables) -> None:
        self.service = service
        self.tables = tables
        self._lock_key = _lock_key(service)
        self._inserts: dict[tuple[str, str], _DriverInsert] = {}
        self._pending_with: dict[str, str] = {}
        # a mutation's record and its queue row as statements that ride in the mutation's own
        # (rider): every value bound by a name of its own, so a data-modifying WITH can hold
        # them beside the mutation's statements
        events, pending = tables.events, tables.pending
        self._ride_record = insert(events).values(
            {c.name: bindparam(f"audit_{c.name}", type_=c.type) for c in events.c}
        )
        self._ride_queue = insert(pending).values(
            event_id=bindparam("audit_queued_id", type_=pending.c.event_id.type)
        )

    def _insert(self, connection: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        self._compiled(connection.dialect, table).execute(connection, rows)

    # --- writing ---------------------------------------------------------------------------

    def insert(self, connection: Connection, records: Sequence[AuditRecord]) -> None:
        """Store ``records`` (not yet linked) in ``connection``'s transaction. On PostgreSQL
        the record and its pending row go in one statement (a data-modifying WITH): a
        mutation waits for each round trip, and at 250 reservations a second the second
        INSERT's alone cost the inventory a tenth of its throughput."""
        rows = [_row(r) for r in records]
        if connection.dialect.name != "postgresql":
            self._insert(connection, self.tables.events, rows)
            self._insert(connection, self.tables.pending, [{"event_id": r.id} for r in records])
            return
        events = self._compiled(connection.dialect, self.tables.events)
        values = events.values(rows)
        connection.exec_driver_sql(
            self._with_pending(events), values[0] if len(values) == 1 else values
        )

    def link_collected(self, connection: Connection, records: Sequence[AuditRecord]) -> int:
        """Store records read from a read journal (services/common/audit/journal.py) and link
        them into the chain at once, in ``connection``'s transaction (which the caller commits
        at once: it holds the chain's head), skipping those stored already (a collector that
        died before deleting its segment); how many were new. They never pass through the
        linker's queue: the collector is a linker, and the queue's insert, join and delete
        would cost as much again."""
        events = self.tables.events
        ids = [r.id for r in records]
        stored = set(connection.scalars(select(events.c.id).where(events.c.id.in_(ids))))
        rows = []
        for record in records:
            if record.service != self.service:  # a journal beside another service's file
                log.error("audit journal: record %s is %s's, not kept", record.id, record.service)
                continue
            if record.id in stored:
                continue
            stored.add(record.id)
            rows.append(_row(record))
        if rows:
            head = self._head(connection)
            self._insert(connection, events, rows)
            links = self._links(head, [(r["id"], r["content_hash"]) for r in rows])
            self._insert(connection, self.tables.chain, links)
        return len(rows)

    def riders(self, record: AuditRecord) -> tuple[Rider, Rider]:
        """``record`` (not yet linked) and its place in the linker's queue as two INSERTs with
        their values, for the mutation to send in its own statement (on PostgreSQL a
        data-modifying WITH: services.common.db.defer_write). The statements are the same
        objects for every record, so a statement built around them can be kept."""
        return (
            (self._ride_record, {f"audit_{k}": v for k, v in _row(record).items()}),
            (self._ride_queue, {"audit_queued_id": record.id}),
        )

    def _head(self, connection: Connection) -> tuple[int, str]:
        """Lock the chain's head for this transaction and read it."""
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._lock_key})
        chain = self.tables.chain
        head = connection.execute(
            select(chain.c.sequence, chain.c.hash).order_by(chain.c.sequence.desc()).limit(1)
        ).first()
        return (head.sequence, head.hash) if head is not None else (0, GENESIS)

    def _links(
        self, head: tuple[int, str], records: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        sequence, previous = head
        links: list[dict[str, Any]] = []
        for event_id, content in records:
            sequence += 1
            current = link_hash(sequence, previous, content)
            links.append(
                {
                    "sequence": sequence,
                    "event_id": event_id,
                    "previous_hash": previous,
                    "hash": current,
                }
            )
            previous = current
        return links

    def append(self, raw: Any, dialect: Dialect, records: Sequence[AuditRecord]) -> None:
        """Store ``records`` with their places in the linker's queue, in a transaction of their
        own on ``raw``, a DB-API connection (SQLite's in autocommit mode, as the engine
        configures it; psycopg2's in a transaction from its first statement), committed before
        this returns and rolled back on any error. The reads' group commit writes one before
        every patient read answers: spoken straight to the driver (statements compiled once)
        it skips what SQLAlchemy's Connection adds per statement (events, cache keys, result
        set-up), which was most of its cost. Like a mutation's record it takes no lock on the
        chain, so batches may commit side by side and none waits for the chain's head."""
        rows = [_row(r) for r in records]
        events = self._compiled(dialect, self.tables.events)
        cursor = raw.cursor()
        try:
            if dialect.name == "sqlite":
                pending = self._compiled(dialect, self.tables.pending)
                cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany(events.sql, events.values(rows))
                cursor.executemany(
                    pending.sql, pending.values([{"event_id": r.id} for r in records])
                )
            else:  # the record and its queue row in one statement, as ``insert``; the
                # dialect's executemany sends a batch as pages, not a round trip per record
                dialect.do_executemany(cursor, self._with_pending(events), events.values(rows))
            raw.commit()
        except BaseException:
            with suppress(Exception):  # a lost connection cannot roll back: the error stands
                raw.rollback()
            raise
        finally:
            with suppress(Exception):
                cursor.close()

    def _with_pending(self, events: _DriverInsert) -> str:
        """PostgreSQL: the records' INSERT that also queues each for the linker (a
        data-modifying WITH)."""
        sql = self._pending_with.get(events.sql)
        if sql is None:
            sql = self._pending_with[events.sql] = (
                f"WITH stored AS ({events.sql} RETURNING id) "
                f"INSERT INTO {self.tables.pending.name} (event_id) SELECT id FROM stored"
            )
        return sql

    def _compiled(self, dialect: Dialect, table: Table) -> _DriverInsert:
        key = (dialect.name, table.name)
        compiled = self._inserts.get(key)
        if compiled is None:
            compiled = self._inserts[key] = _DriverInsert(table, dialect)
        return compiled

    def link_pending(self, connection: Connection, limit: int = 500) -> int:
        """Append chain links for up to ``limit`` pending records, oldest first, in
        ``connection``'s transaction (which the caller commits at once). Returns how many."""
        head = self._head(connection)
        events, pending = self.tables.events, self.tables.pending
        rows = connection.execute(
            select(events.c.id, events.c.content_hash)
            .join(pending, pending.c.event_id == events.c.id)
            .order_by(events.c.id)
            .limit(limit)
        ).all()
        if not rows:
            return 0
        links = self._links(head, [(row.id, row.content_hash) for row in rows])
        self._insert(connection, self.tables.chain, links)
        ids = [link["event_id"] for link in links]
        connection.execute(delete(pending).where(pending.c.event_id.in_(ids)))
        return len(links)

    # --- reading ---------------------------------------------------------------------------

    def _record(self, m: Any, link: Any = None) -> AuditRecord:
        return AuditRecord(
            id=m["id"],
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
            sequence=(link["sequence"] or 0) if link is not None else 0,
            previous_hash=(link["previous_hash"] or "") if link is not None else "",
            hash=(link["hash"] or "") if link is not None else "",
        )

    def find(self, connection: Connection, where: AuditFilter, limit: int) -> list[AuditRecord]:
        """Records matching ``where``, oldest first, after ``where.after_id``, with their
        place in the chain when they are linked."""
        events, chain = self.tables.events, self.tables.chain
        query = (
            select(events, chain.c.sequence, chain.c.previous_hash, chain.c.hash)
            .outerjoin(chain, chain.c.event_id == events.c.id)
            .where(events.c.id > where.after_id)
        )
        if where.organisation_id is not None:
            query = query.where(events.c.organisation_id == where.organisation_id)
        if where.patient_id:
            query = query.where(
                events.c.patient_ids.contains(f" {where.patient_id} ", autoescape=True)
            )
        if where.actor:
            query = query.where(events.c.subject == where.actor)
        if where.start is not None:
            query = query.where(events.c.occurred_at >= where.start)
        if where.end is not None:
            query = query.where(events.c.occurred_at < where.end)
        rows = connection.execute(query.order_by(events.c.id).limit(limit))
        return [self._record(row._mapping, row._mapping) for row in rows]

    def walk(self, connection: Connection) -> Iterator[Link]:
        """The chain in sequence order, a batch at a time, each link with its record."""
        events, chain = self.tables.events, self.tables.chain
        after = 0
        while True:
            rows = connection.execute(
                select(chain, events)
                .outerjoin(events, events.c.id == chain.c.event_id)
                .where(chain.c.sequence > after)
                .order_by(chain.c.sequence)
                .limit(READ_BATCH)
            ).all()
            for row in rows:
                m = row._mapping
                record = self._record(m, m) if m[events.c.id] is not None else None
                yield Link(
                    m[chain.c.sequence],
                    m[chain.c.event_id],
                    m[chain.c.previous_hash],
                    m[chain.c.hash],
                    record,
                )
            if len(rows) < READ_BATCH:
                return
            after = rows[-1]._mapping[chain.c.sequence]

    def outside_chain(self, connection: Connection, limit: int = 10) -> list[str]:
        """Ids of records neither linked nor pending: written around the trail."""
        events, chain, pending = self.tables.events, self.tables.chain, self.tables.pending
        query = (
            select(events.c.id)
            .outerjoin(chain, chain.c.event_id == events.c.id)
            .outerjoin(pending, pending.c.event_id == events.c.id)
            .where(chain.c.event_id.is_(None), pending.c.event_id.is_(None))
            .order_by(events.c.id)
            .limit(limit)
        )
        return list(connection.scalars(query))

    def pending_count(self, connection: Connection) -> int:
        return int(connection.scalar(select(func.count()).select_from(self.tables.pending)) or 0)


def _row(r: AuditRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "occurred_at": r.occurred_at,
        "method": r.method,
        "kind": r.kind,
        "resource_type": r.resource_type,
        "resource_ids": list(r.resource_ids),
        "patient_ids": _patient_ids_text(r.patient_ids),
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
        "content_hash": content_hash(r),
    }


def _patient_ids_text(ids: Iterable[str]) -> str:
    """The ``patient_ids`` column: a space around every id (define_audit_tables says why)."""
    return "".join(f" {p}" for p in ids) + " "
