"""The audit trail of one service: a record for every mutation, in the mutation's own
transaction, and for every read of patient data, stored before the answer leaves.

The interceptor opens an :class:`AuditCall` for each audited call (a context variable, like the
caller). Mutations: the write sessions' ``before_commit`` hook appends the call's one record to
the first transaction of the call that changed something, so the record commits with the change
or rolls back with it; a call whose transactions all rolled back leaves none. A replayed
idempotent request (``mark_replayed``) changed nothing and is not a new mutation: no record. A
mutation that succeeded without a transaction of its own changes (nothing to change, a change
made elsewhere) gets its record in a transaction of its own at the end of the call, so every
successful mutation has exactly one. Reads: the record is written after the handler, before
the response is returned to gRPC: on a SQLite file appended to the read journal beside it
(services/common/audit/journal.py says why), on PostgreSQL through a group commit shared by
concurrent calls; if it cannot be stored, the call fails instead of answering unaudited.

No record takes a lock on the chain (a link needs its predecessor committed: every mutation
would wait for the one before it, every read batch for the one before it): each is stored with
its place in the linker's queue, and the linker (services/common/audit/linker.py) links them
in batches right after.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf.message import Message
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from services.common import errors
from services.common.audit.group_commit import GroupCommit, WriteFailed
from services.common.audit.ids import Concerned, from_request, from_response, from_rows
from services.common.audit.journal import ReadJournal, beside
from services.common.audit.keeper import AuditKeeper
from services.common.audit.linker import ChainLinker
from services.common.audit.record import (
    MAX_CALLER_CHARS,
    MAX_ID_CHARS,
    MAX_IDS,
    MAX_ORGANISATION_CHARS,
    MAX_PEER_CHARS,
    MUTATION,
    AuditRecord,
    RawRecord,
    utc_text,
)
from services.common.audit.store import AuditStore
from services.common.clock import Clock
from services.common.db import Database, Rider, flush_deferred, has_deferred_write
from services.common.identity import Caller
from services.common.ids import new_id
from services.common.interceptors import database_away

log = logging.getLogger(__name__)

READ_WRITERS = 4
"""Batches of read records written at once on PostgreSQL (each on a pooled connection)."""

_WRITTEN = "audit.written"  # session.info: the call whose record this transaction holds
_CHANGED = "audit.changed"  # session.info: the transaction inserted, updated or deleted


@dataclass
class AuditCall:
    """One audited call in progress."""

    method: str
    kind: str  # MUTATION or PATIENT_READ
    resource_type: str
    caller: Caller
    peer: str
    request: Message
    purpose: str
    recorded: bool = False
    replayed: bool = False
    expected: bool = False  # announced to the group commit (reads)
    touched: Concerned = field(default_factory=Concerned)  # by the call's committed writes
    # by the running transaction's writes: kept at its commit, forgotten at its rollback (a
    # retried attempt, such as a reservation that lost its lot, names only what it made)
    touching: Concerned = field(default_factory=Concerned)
    trail: AuditTrail | None = None  # whose record this is (ride reaches it through the call)

    def raw(self, service: str, clock: Clock, outcome: str, extra: Concerned) -> RawRecord:
        """The call's record as gathered: ids from the request, the call's writes and
        ``extra`` (a read's answer), texts cut to their limits, nothing cleaned yet."""
        concerned = from_request(self.request, self.resource_type)
        concerned.add(self.touched)
        concerned.add(self.touching)
        concerned.add(extra)
        caller = self.caller
        organisation = caller.organisation_id
        if organisation is None:  # a service acting for whichever organisation owns the rows
            organisation = min(concerned.organisation_ids, default="")
        return RawRecord(
            new_id(),
            service,
            utc_text(clock.now()),
            self.method,
            self.kind,
            self.resource_type,
            _cut(concerned.resource_ids),
            _cut(concerned.patient_ids),
            caller.subject[:MAX_CALLER_CHARS],
            caller.kind,
            caller.client_id[:MAX_CALLER_CHARS],
            list(caller.roles),
            caller.token_id[:MAX_CALLER_CHARS],
            organisation[:MAX_ORGANISATION_CHARS],
            self.peer[:MAX_PEER_CHARS],
            outcome,
            str(getattr(self.request, "request_id", "") or "")[:MAX_ID_CHARS],
            self.purpose,
        )

    def record(self, service: str, clock: Clock, outcome: str, extra: Concerned) -> AuditRecord:
        return self.raw(service, clock, outcome, extra).cleaned()


def _cut(ids: set[str]) -> list[str]:
    """At most MAX_IDS ids of at most MAX_ID_CHARS each (cleaned and sorted later): a
    journal line stays as small as the record it becomes."""
    if len(ids) > MAX_IDS:
        ids = set(sorted(ids)[:MAX_IDS])
    return [i[:MAX_ID_CHARS] for i in ids]


_current: ContextVar[AuditCall | None] = ContextVar("audit_call", default=None)


@contextmanager
def auditing(call: AuditCall) -> Iterator[AuditCall]:
    token = _current.set(call)
    try:
        yield call
    finally:
        _current.reset(token)


def current_call() -> AuditCall | None:
    return _current.get()


def mark_replayed() -> None:
    """The running call answered a repeated request_id with its first result: it changed
    nothing now, so it is not recorded again (services.common.idempotency)."""
    call = _current.get()
    if call is not None:
        call.replayed = True


def ride(session: Session) -> tuple[Rider, ...]:
    """The running mutation's record as statements for the mutation to send in its own last
    write of ``session``'s transaction (on PostgreSQL one data-modifying WITH), so that the
    record costs the hot path no round trip of its own; none when there is nothing to record
    here (no audited mutation running, replayed, recorded already) or when ORM changes are
    still to be flushed (the commit hook then records them all, as it always does). The record
    names what the call has told the trail so far (``wrote`` before ``ride``). The commit hook
    writes no other record for this transaction; a rollback forgets it, and a next attempt
    rides again."""
    call = _current.get()
    if call is None or call.kind != MUTATION or call.recorded or call.replayed:
        return ()
    if call.trail is None or session.info.get(_WRITTEN) is not None:
        return ()
    if session.new or session.dirty or session.deleted:
        return ()
    return call.trail.riding(session, call)


def wrote(session: Session, *rows: object) -> None:
    """Rows the running mutation writes in ``session``'s transaction by statement rather than
    by flush (so the flush hook never sees them): its record names them as it would flushed
    ones, and is written in that transaction at its commit (unless it rode in a statement)."""
    session.info[_CHANGED] = True
    call = _current.get()
    if call is not None and call.kind == MUTATION:
        call.touching.add(from_rows(rows, call.resource_type))


class AuditTrail:
    def __init__(
        self,
        service: str,
        db: Database,
        store: AuditStore,
        clock: Clock,
        linker: Literal["process", "thread"] = "thread",
    ) -> None:
        """``linker``: where records are linked into the chain (and the read journal
        collected): a keeper process of its own (services/common/audit/keeper.py says why) or
        a thread of this one."""
        self.service = service
        self.db = db
        self.store = store
        self.clock = clock
        # SQLite has one writer; PostgreSQL flushes concurrent commits' WAL together
        writers = 1 if db.dialect == "sqlite" else READ_WRITERS
        self._group: GroupCommit[AuditRecord] = GroupCommit(self._write, writers=writers)
        journal = beside(db.url)
        self.journal = ReadJournal(journal) if journal is not None else None
        self.linker = ChainLinker(db, store, self.journal)
        self.keeper = (
            AuditKeeper(service, db.url, self.journal.let_go if self.journal else lambda: None)
            if linker == "process"
            else None
        )
        self._installed = False

    def install(self) -> None:
        """Hook the write sessions (once; the server does it when it starts serving the
        trail: a build without the trail, bench's baseline, carries no hook at all)."""
        if self._installed:
            return
        self._installed = True
        for name, listener in (
            ("do_orm_execute", self._on_execute),
            ("after_flush", self._after_flush),
            ("before_commit", self._before_commit),
            ("after_commit", self._after_commit),
            ("after_rollback", self._after_rollback),
        ):
            self.db.on_write_session(name, listener)

    # --- a mutation's record, in its own transaction ---------------------------------------

    def _on_execute(self, state: Any) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            state.session.info[_CHANGED] = True

    def _after_flush(self, session: Session, _context: Any) -> None:
        call = _current.get()
        if call is None or call.kind != MUTATION:
            return
        rows = [*session.new, *session.dirty, *session.deleted]
        if rows:
            session.info[_CHANGED] = True
            call.touching.add(from_rows(rows, call.resource_type))

    def _before_commit(self, session: Session) -> None:
        call = _current.get()
        if call is None or call.kind != MUTATION or call.recorded or call.replayed:
            return
        if has_deferred_write(session):  # held for its response: the record rides with it
            flush_deferred(session, *ride(session))
        if session.new or session.dirty or session.deleted:
            session.flush()  # the rows it would flush on commit, so their ids are known
        if not session.info.get(_CHANGED) or session.info.get(_WRITTEN) is call:
            return  # nothing changed, or the record rode in the use case's own statement
        record = call.record(self.service, self.clock, "OK", Concerned())
        self.store.insert(session.connection(), [record])
        session.info[_WRITTEN] = call

    def riding(self, session: Session, call: AuditCall) -> tuple[Rider, ...]:
        """``ride``'s answer: the call's record as the statements that store it."""
        record = call.record(self.service, self.clock, "OK", Concerned())
        session.info[_CHANGED] = True
        session.info[_WRITTEN] = call
        return self.store.riders(record)

    def _after_commit(self, session: Session) -> None:
        running = _current.get()
        if running is not None:
            running.touched.add(running.touching)
            running.touching = Concerned()
        call = session.info.pop(_WRITTEN, None)
        session.info.pop(_CHANGED, None)
        if call is not None:
            call.recorded = True
            self.linker.stored(1)

    def _after_rollback(self, session: Session) -> None:
        running = _current.get()
        if running is not None:
            running.touching = Concerned()
        for key in (_WRITTEN, _CHANGED):
            session.info.pop(key, None)

    # --- the end of a call ----------------------------------------------------------------

    def finish(self, call: AuditCall, outcome: str, response: Message | None) -> None:
        """Store what the call still owes the trail before its answer leaves: a read's
        record (whatever its outcome), a successful mutation's when no transaction of the
        call carried it. Raises when it cannot be stored."""
        if call.kind == MUTATION:
            if call.recorded or call.replayed or outcome != "OK":
                return
            extra = Concerned()
        else:
            extra = (
                from_response(response, call.resource_type) if response is not None else Concerned()
            )
        self.store_now(call.raw(self.service, self.clock, outcome, extra), call.expected)
        call.expected = False
        call.recorded = True

    def opening(self, call: AuditCall) -> None:
        """A call started that will store a record at its end (a read): a group commit under
        way may wait a moment for it."""
        if call.kind != MUTATION and self.journal is None:
            self._group.expect()
            call.expected = True

    def closing(self, call: AuditCall) -> None:
        """The call ended; if it never stored its record, it is no longer waited for."""
        if call.expected:
            call.expected = False
            self._group.unexpect()

    def store_now(self, record: RawRecord, expected: bool = False) -> None:
        """Append ``record`` in a transaction shared with whichever concurrent calls are
        storing theirs; return once it is committed. The database gone away under the
        shared write answers as any call then does: UNAVAILABLE, which clients retry. With a
        read journal, appended to it instead (a disk that cannot take it answers the same)."""
        if self.journal is not None:
            try:
                self.journal.append(record)
            except OSError as failed:
                raise errors.Unavailable(
                    "the audit trail cannot be written: retry shortly",
                    reason="DATABASE_UNAVAILABLE",
                ) from failed
            self.linker.stored(1)
            return
        try:
            self._group.submit(record.cleaned(), expected)
        except WriteFailed as failed:
            cause = failed.__cause__
            if isinstance(cause, DBAPIError) and database_away(cause):
                raise errors.Unavailable(
                    "the database is unavailable: retry shortly", reason="DATABASE_UNAVAILABLE"
                ) from failed
            raise

    def _write(self, records: Sequence[AuditRecord]) -> None:
        """One group commit's transaction, on a connection of the pool spoken to through its
        driver (AuditStore.append says why). A driver error comes out as SQLAlchemy's
        DBAPIError, as through a Session, so a lost database reads as one everywhere; a
        connection it broke is not put back in the pool."""
        engine = self.db.engine
        dbapi_error = engine.dialect.loaded_dbapi.Error
        raw = None
        try:
            raw = engine.raw_connection()  # no connection: the driver's error, unwrapped
            self.store.append(raw, engine.dialect, records)
        except dbapi_error as error:
            lost = raw is None or engine.dialect.is_disconnect(error, raw.dbapi_connection, None)
            if raw is not None and lost:
                raw.invalidate(error)
            raise DBAPIError.instance(
                None, None, error, dbapi_error, hide_parameters=True, connection_invalidated=lost
            ) from error
        finally:
            if raw is not None:
                raw.close()
        self.linker.stored(len(records))

    def start(self) -> None:
        """Link records into the chain from now on (the server, once migrated)."""
        if self.keeper is not None:
            self.keeper.start()
        else:
            self.linker.start()

    def stop(self) -> None:
        """Stop linking, after linking what is pending (the server, after its drain)."""
        if self.keeper is not None:
            self.keeper.stop()
        self.linker.stop()
        if self.journal is not None:
            self.journal.close()

    def settle(self) -> None:
        """Store what the read journal holds (before the trail is read: an auditor sees every
        record written before the question)."""
        self.linker.collect()
