"""Idempotent mutations: a repeated request_id returns the first result.

The key is claimed first and the response stored in the same transaction as the mutation's
effects, so either both exist or neither does; the claim is the transaction's first statement
(an insert that does nothing when the key exists, after which the stored response is read), so
a new request costs two statements of its own (one when the mutation held its write back,
services.common.db.defer_write, and the response rides in it) and a replay two. Two
concurrent calls with one request_id meet on the key's primary key before either has done
anything: the second waits for the first to commit, then returns the stored response. A
request_id reused with a different request is the caller's bug and is refused (AIP-155).

A hot mutation whose effects are one held-back write (``defer_write``) may instead run ``in one
statement``: nothing is claimed, the key and the response ride in that write, and on
PostgreSQL the mutation runs without a transaction around it (``Database.statementwise``),
so a new request costs no statement and no BEGIN or COMMIT of its own (three round trips of
five for a Publish). A repeat, or a concurrent twin, meets the key's primary key in the write,
which then fails as a whole (the twin's waits for the first to commit); the stored response is
answered. A repeat whose mutation now fails (the state moved on since the first) answers the
stored response too, so a retry still returns the first result. A mutation that finds it needs
more than one statement raises NeedsTransaction before writing and runs again the usual way.
On SQLite, which lets one writer in at a time, the claim stays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy import (
    Column,
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
from services.common.db import Database, NeedsTransaction, flush_deferred, has_deferred_write
from services.common.errors import Aborted, DomainError, FieldViolation, InvalidArgument
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
        in_one_statement: bool = False,
    ) -> R:
        """Run ``mutate`` in a write transaction once per (method, request.request_id) within
        the caller's organisation: two organisations' request ids never meet, so a replay
        cannot hand one organisation the response to another's request.

        ``in_one_statement``: ``mutate`` reads, then holds back its one write
        (``defer_write``) and writes nothing else; it runs as the module's docstring says."""
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
        if in_one_statement and self._db.dialect == "postgresql":
            try:
                return self._run_in_one_statement(method, request_id, digest, response_type, mutate)
            except NeedsTransaction:
                pass  # too much for one statement: claimed, in a transaction, as any other
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

    def _run_in_one_statement(
        self,
        method: str,
        request_id: str,
        digest: str,
        response_type: type[R],
        mutate: Callable[[Session], R],
    ) -> R:
        try:
            with self._db.statementwise() as session:
                response = mutate(session)
                if not has_deferred_write(session):
                    raise RuntimeError(f"{method} ran in one statement without holding it back")
                key = {
                    "method": method,
                    "request_id": request_id,
                    "request_hash": digest,
                    "response": response.SerializeToString(),
                    "created_at": self._now(),
                }
                flush_deferred(session, (self._key, key), *ride(session))
                return response
        except (IntegrityError, DomainError):
            # a repeat (its key met ours, or its mutation no longer holds): the first result
            stored = self._lookup(method, request_id, digest, response_type)
            if stored is None:
                raise
            mark_replayed()
            return stored

    def _now(self) -> datetime:
        return self._clock.now()

    def _lookup(self, method: str, request_id: str, digest: str, rtype: type[R]) -> R | None:
        with self._db.read() as session:
            return self._lookup_in(session, method, request_id, digest, rtype)

    def _lookup_in(
        self, session: Session, method: str, request_id: str, digest: str, rtype: type[R]
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
