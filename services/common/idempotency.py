"""Idempotent mutations: a repeated request_id returns the first result.

The key is claimed first and the response stored in the same transaction as the mutation's
effects, so either both exist or neither does; the claim is the transaction's first statement
(an insert that does nothing when the key exists, after which the stored response is read), so
a new request costs two statements of its own (one when the mutation held its write back,
services.common.db.defer_write, and the response rides in it) and a replay two. Two
concurrent calls with one request_id meet on the key's primary key before either has done
anything: the second waits for the first to commit, then returns the stored response. A
request_id reused with a different request is the caller's bug and is refused (AIP-155).

A hot mutation may instead write its key last (``key_last``): nothing is claimed, and the key
with the response is inserted at the end of the mutation's transaction, riding in its held-back
write when it has one (``defer_write``): a new request then costs no statement of its own. A
repeat, or a concurrent twin, meets the key's primary key there (the twin's insert waits for
the first to commit), and its whole transaction rolls back; the stored response is answered. A
repeat whose mutation now fails (the state moved on since the first: the chair is booked) answers
the stored response too, so a retry still returns the first result. Only for a mutation whose
every effect is in its transaction (an outbox row, not a call to another service): a twin runs
it too before it meets the key.

A mutation that reads and then makes its one held-back write may also run ``statementwise``: on
PostgreSQL without a transaction around it (``Database.statementwise``), so that it costs no
BEGIN or COMMIT either (a Publish: two round trips of five). A mutation that finds it needs more
than one statement there raises NeedsTransaction before writing and runs again in a
transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from google.protobuf.message import Message
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.audit.trail import mark_replayed, ride
from services.common.clock import Clock
from services.common.db import (
    Database,
    NeedsTransaction,
    flush_deferred,
    has_deferred_write,
)
from services.common.db import statementwise as is_statementwise
from services.common.errors import (
    Aborted,
    DomainError,
    FieldViolation,
    InvalidArgument,
    Unavailable,
)
from services.common.joint_writes import insert_one
from services.common.scope import current_scope

R = TypeVar("R", bound=Message)

MAX_REQUEST_ID = 128


def define_idempotency_table(metadata: MetaData, service: str) -> Table:
    """Named per service so services may share one database without colliding."""
    return Table(
        f"{service}_idempotency_keys",
        metadata,
        Column("method", String(200), primary_key=True),
        Column("request_id", String(MAX_REQUEST_ID), primary_key=True),
        Column("request_hash", String(64), nullable=False),
        Column("response", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )


def _keyed_by_organisation(method: str) -> str:
    """``<organisation>/<method>`` for a person or hospital system; the bare method for our
    own services (their relays retry across restarts and act for every organisation)."""
    organisation = current_scope().organisation_id
    if organisation is None:
        return method
    if len(organisation) > 64:  # the key column is 200 characters; claims are unbounded
        organisation = hashlib.sha256(organisation.encode()).hexdigest()
    return f"{organisation}/{method}"


def _fingerprint(request: Message) -> str:
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in {f.name for f in copy.DESCRIPTOR.fields}:
        copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


class _Keyed(NamedTuple):
    method: str  # keyed by organisation
    request_id: str
    digest: str  # the request's fingerprint


class IdempotencyStore:
    def __init__(self, db: Database, table: Table, clock: Clock) -> None:
        self._db = db
        self._table = table
        self._clock = clock
        insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        self._claim = insert(table).on_conflict_do_nothing().returning(table.c.method)
        self._key = insert_one(table, tuple(c.name for c in table.c))  # riding a joint write
        self._store = (
            table.update()
            .where(
                table.c.method == bindparam("k_method", type_=table.c.method.type),
                table.c.request_id == bindparam("k_request_id", type_=table.c.request_id.type),
            )
            .values(response=bindparam("k_response", type_=table.c.response.type))
        )

    def run(
        self,
        method: str,
        request: Message,
        response_type: type[R],
        mutate: Callable[[Session], R],
        *,
        key_last: bool = False,
        statementwise: bool = False,
    ) -> R:
        """Run ``mutate`` in a write transaction once per (method, request.request_id) within
        the caller's organisation: two organisations' request ids never meet, so a replay
        cannot hand one organisation the response to another's request.

        ``key_last`` and ``statementwise`` (which needs ``key_last``): the module's docstring
        says when a mutation may run so and what it gains."""
        method = _keyed_by_organisation(method)
        request_id: str = getattr(request, "request_id", "")
        if not request_id:
            with self._db.write() as session:
                return mutate(session)
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(
                [FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} characters")]
            )
        digest = _fingerprint(request)
        if key_last:
            last = _Keyed(method, request_id, digest)
            try:
                return self._run_key_last(last, response_type, mutate, statementwise)
            except NeedsTransaction:  # too much for one statement: in a transaction
                return self._run_key_last(last, response_type, mutate, False)
        try:
            with self._db.write() as session:
                # Claim the key before any effect, in the mutation's transaction (one statement,
                # no lookup first): a concurrent call with the same request_id waits on this row
                # (PostgreSQL) or on the write lock (SQLite) until we commit, then claims nothing
                # and returns our response.
                claimed = session.execute(
                    self._claim,
                    {
                        "method": method,
                        "request_id": request_id,
                        "request_hash": digest,
                        "response": b"",
                        "created_at": self._now(),
                    },
                )
                if claimed.first() is None:
                    stored = self._lookup_in(session, method, request_id, digest, response_type)
                    if stored is not None:
                        mark_replayed()
                        return stored
                    # the key was there and is gone (purged meanwhile): the client may retry
                    raise Aborted("the request_id is being reused right now; retry")
                response = mutate(session)
                keyed: dict[str, Any] = {
                    "k_method": method,
                    "k_request_id": request_id,
                    "k_response": response.SerializeToString(),
                }
                # a mutation that held its write back (services.common.db.defer_write) carries
                # the response, and its audit record, in that write's round trip
                if has_deferred_write(session):
                    flush_deferred(session, (self._store, keyed), *ride(session))
                else:
                    session.execute(self._store, keyed)
                return response
        except IntegrityError:
            stored = self._lookup(method, request_id, digest, response_type)
            if stored is None:
                raise
            mark_replayed()
            return stored

    def _run_key_last(
        self,
        keyed: _Keyed,
        response_type: type[R],
        mutate: Callable[[Session], R],
        statementwise: bool,
    ) -> R:
        opened = self._db.statementwise if statementwise else self._db.write
        try:
            with opened() as session:
                response = mutate(session)
                key = {
                    "method": keyed.method,
                    "request_id": keyed.request_id,
                    "request_hash": keyed.digest,
                    "response": response.SerializeToString(),
                    "created_at": self._now(),
                }
                if has_deferred_write(session):
                    flush_deferred(session, (self._key, key), *ride(session))
                elif is_statementwise(session):  # its writes, if any, stand already
                    raise RuntimeError(f"{keyed.method} ran statementwise without holding back")
                else:
                    session.execute(self._key, key)
                return response
        except Unavailable:
            raise  # the database or a peer is away: a lookup would not reach it either
        except (IntegrityError, DomainError):
            # a repeat (its key met ours, or its mutation no longer holds): the first result
            stored = self._lookup(keyed.method, keyed.request_id, keyed.digest, response_type)
            if stored is None:
                raise
            mark_replayed()
            return stored

    def _now(self) -> datetime:
        return self._clock.now()

    def _lookup(self, method: str, request_id: str, digest: str, rtype: type[R]) -> R | None:
        with self._db.single_read() as connection:
            return self._lookup_in(connection, method, request_id, digest, rtype)

    def _lookup_in(
        self,
        session: Session | Connection,
        method: str,
        request_id: str,
        digest: str,
        rtype: type[R],
    ) -> R | None:
        row = session.execute(
            select(self._table.c.request_hash, self._table.c.response).where(
                self._table.c.method == method, self._table.c.request_id == request_id
            )
        ).first()
        if row is None:
            return None
        if row.request_hash != digest:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "request_id",
                        "was already used for a different request; use a new request_id",
                    )
                ],
                reason="REQUEST_ID_REUSED",
            )
        return rtype.FromString(row.response)
