"""The outbox relay: carries a service's outbox rows (services.common.outbox) to their
receiver, with retries and backoff, using the row id as the receiver's request_id.

It belongs to the sending service. ``deliver(event)`` is supplied by the service (for the
inventory: a call of notify's Publish over gRPC with ``request_id=event.id``); it returns on
success and raises on any failure. A row is marked delivered only after ``deliver`` returned,
so a crash between the two re-delivers it, and the receiver's idempotency on request_id turns
that repeat into a no-op.

Claiming:
- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` in one transaction that also records the
  outcomes, so several replicas each take different rows and none delivers a row another is
  delivering; the row locks are held for the duration of the ``deliver`` calls.
- SQLite (one process): rows are read, delivered outside any transaction (a gRPC call must not
  hold the database's single write lock), and the outcomes written afterwards.

A round's outcomes are written together once its rows have been tried: one UPDATE marks every
row delivered, and each failed or dead-lettered row gets its own attempts and last_error; on
PostgreSQL that is one statement (services.common.joint_writes) before the commit, on SQLite one
transaction. Each row's attempts come from the claiming read, so a failure costs no read of its
own. A crash before the outcomes are written delivers the round's rows again, which the
receivers' idempotency absorbs.

Failures: ``attempts`` is incremented and ``last_error`` set; the row is retried after an
exponential backoff with jitter (base * 2^(attempts-1), capped). The backoff schedule is kept
in memory, so after a restart a failed row is tried again at once. A failing row does not hold
back the rows after it (notifications need no strict order; receivers dedupe). With
``max_attempts`` set, rows that reached it are left alone (still undelivered, visible with
their last_error) instead of retried for ever.

A receiver's refusal that no retry can change (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION:
``deliver`` raises PermanentFailure, see ``publish_or_dead_letter``) dead-letters the row at
once: it stays undelivered with ``attempts = DEAD_LETTER_ATTEMPTS`` and its last_error, for a
person to look at, instead of being retried every few minutes for ever.

Observed: each row is delivered in a span whose parent is the row's traceparent (so the
receiver's work joins the trace of the call that wrote the row); deliveries are counted by
result (``outbox_deliveries_total``), each round is a run of the job named after the relay,
and the backlog (rows pending, the oldest one's age, dead letters) is read at each scrape.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from services.common import metrics, tracing
from services.common.background import BackgroundLoop
from services.common.clock import Clock
from services.common.db import Database
from services.common.identity import Caller, running_as
from services.common.joint_writes import Write, write_all
from services.common.outbox import OutgoingEvent, outgoing

log = logging.getLogger(__name__)

DEAD_LETTER_ATTEMPTS = 1_000_000
# Codes that say "this request is wrong", not "try later" (AIP-194).
_PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class PermanentFailure(Exception):
    """The receiver refused the event for good: dead-letter it, don't retry."""


def publish_or_dead_letter(call: Callable[[], object]) -> None:
    """Run a gRPC call for ``deliver``; a refusal no retry can change becomes
    PermanentFailure, anything else (UNAVAILABLE, DEADLINE_EXCEEDED...) stays retryable."""
    try:
        call()
    except grpc.RpcError as error:
        code = error.code()
        if code in _PERMANENT:
            raise PermanentFailure(f"{code.name}: {error.details()}") from error
        raise


Deliver = Callable[[OutgoingEvent], None]


@dataclass(frozen=True)
class RelayPolicy:
    batch_size: int = 100
    retry_base: dt.timedelta = dt.timedelta(seconds=1)
    retry_max: dt.timedelta = dt.timedelta(minutes=5)
    max_attempts: int | None = None
    interval_seconds: float = 1.0


@dataclass(frozen=True)
class RelayRound:
    delivered: int
    failed: int


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        table: Table,
        deliver: Deliver,
        clock: Clock,
        policy: RelayPolicy | None = None,
        *,
        caller: Caller,
        jitter: Callable[[], float] = random.random,
        name: str = "outbox-relay",
    ) -> None:
        """The background rounds act as ``caller``, the sending service."""
        self.db = db
        self.table = table
        self.deliver = deliver
        self.clock = clock
        self.policy = policy or RelayPolicy()
        self._jitter = jitter
        self._name = name
        self._not_before: dict[str, dt.datetime] = {}
        self._loop = BackgroundLoop(
            name,
            running_as(caller, lambda: self.run_once().delivered > 0),
            self.policy.interval_seconds,
        )
        self._counted = {
            result: metrics.OUTBOX_DELIVERIES.labels(name, result)
            for result in ("delivered", "failed", "dead_lettered")
        }
        metrics.watch(f"outbox:{name}", self.backlog)
        t = table
        row = t.c.id == bindparam("row_id")
        self._mark_delivered = (
            update(t)
            .where(t.c.id.in_(bindparam("ids", expanding=True)), t.c.delivered_at.is_(None))
            .values(delivered_at=bindparam("at", type_=t.c.delivered_at.type))
        )
        self._mark_failed = (
            update(t).where(row).values(attempts=t.c.attempts + 1, last_error=bindparam("error"))
        )
        self._mark_dead = (
            update(t)
            .where(row)
            .values(attempts=DEAD_LETTER_ATTEMPTS, last_error=bindparam("error"))
        )

    # -- one round ----------------------------------------------------------------------------

    def run_once(self) -> RelayRound:
        """Deliver the undelivered rows that are due now, in ``seq`` order."""
        if self.db.dialect == "postgresql":
            with self.db.write() as session:
                events = self._due(session, lock=True)
                return self._deliver_all(session, events)
        with self.db.read() as session:
            events = self._due(session, lock=False)
        return self._deliver_all(None, events)

    def drain(self, limit: int = 1000) -> RelayRound:
        """``run_once`` until a round delivers nothing (tests, shutdown)."""
        delivered = failed = 0
        for _ in range(limit):
            r = self.run_once()
            delivered += r.delivered
            failed += r.failed
            if r.delivered == 0:
                break
        return RelayRound(delivered, failed)

    def _due(self, session: Session, *, lock: bool) -> list[tuple[OutgoingEvent, int]]:
        """The rows due now, each with its attempts so far."""
        t = self.table
        now = self.clock.now()
        waiting = [k for k, at in self._not_before.items() if at > now]
        query = select(t).where(t.c.delivered_at.is_(None))
        limit = min(self.policy.max_attempts or DEAD_LETTER_ATTEMPTS, DEAD_LETTER_ATTEMPTS)
        query = query.where(t.c.attempts < limit)
        if waiting:
            query = query.where(t.c.id.not_in(waiting))
        query = query.order_by(t.c.seq).limit(self.policy.batch_size)
        if lock:
            query = query.with_for_update(skip_locked=True)
        return [(outgoing(r), r.attempts) for r in session.execute(query)]

    def _deliver_all(
        self, session: Session | None, due: list[tuple[OutgoingEvent, int]]
    ) -> RelayRound:
        delivered: list[str] = []
        failed: list[dict[str, str]] = []
        dead: list[dict[str, str]] = []
        for event, attempts in due:
            try:
                with tracing.span(
                    f"outbox {event.topic}",
                    event.traceparent,
                    {"outbox.relay": self._name, "outbox.row_id": event.id},
                ):
                    self.deliver(event)
            except PermanentFailure as refused:
                self._counted["dead_lettered"].inc()
                dead.append(self._dead(event, refused))
            except Exception as error:  # any other failure: count it, back off, keep going
                self._counted["failed"].inc()
                failed.append(self._failed(event, attempts + 1, error))
            else:
                self._counted["delivered"].inc()
                self._not_before.pop(event.id, None)
                delivered.append(event.id)
        marked = [{"ids": delivered, "at": self.clock.now()}] if delivered else []
        writes: list[Write] = [
            (self._mark_delivered, marked),
            (self._mark_failed, failed),
            (self._mark_dead, dead),
        ]
        if session is not None:
            write_all(session, writes)
        elif due:
            with self.db.write() as own:
                write_all(own, writes)
        return RelayRound(len(delivered), len(failed) + len(dead))

    def backlog(self) -> list[metrics.Reading]:
        """The gauges of this relay's outbox (one query over the undelivered rows' index)."""
        t = self.table
        dead = t.c.attempts >= min(
            self.policy.max_attempts or DEAD_LETTER_ATTEMPTS, DEAD_LETTER_ATTEMPTS
        )
        query = select(
            func.count().filter(~dead),
            func.min(t.c.created_at).filter(~dead),
            func.count().filter(dead),
        ).where(t.c.delivered_at.is_(None))
        with self.db.single_read() as connection:
            pending, oldest, dead_letters = connection.execute(query).one()
        age = 0.0 if oldest is None else max((self.clock.now() - oldest).total_seconds(), 0.0)
        labels = {"relay": self._name}
        return [
            metrics.Reading("outbox_pending_rows", labels, pending),
            metrics.Reading("outbox_oldest_pending_age_seconds", labels, age),
            metrics.Reading("outbox_dead_letter_rows", labels, dead_letters),
        ]

    def _failed(self, event: OutgoingEvent, attempts: int, error: Exception) -> dict[str, str]:
        """Back the row off (base * 2^(attempts-1), capped, with jitter); answer the values its
        outcome is written with."""
        text = f"{type(error).__name__}: {error}"[:1000]
        exponent = min(attempts - 1, 30)
        delay = min(self.policy.retry_base * (2**exponent), self.policy.retry_max)
        self._not_before[event.id] = self.clock.now() + delay * (0.5 + 0.5 * self._jitter())
        log.warning(
            "%s: %s %s failed (attempt %d): %s", self._name, event.topic, event.id, attempts, text
        )
        return {"row_id": event.id, "error": text}

    def _dead(self, event: OutgoingEvent, error: Exception) -> dict[str, str]:
        text = f"dead-lettered: {error}"[:1000]
        self._not_before.pop(event.id, None)
        log.error("%s: %s %s %s", self._name, event.topic, event.id, text)
        return {"row_id": event.id, "error": text}

    # -- the background thread ----------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def wake(self) -> None:
        self._loop.wake()

    def stop(self, timeout: float = 10.0) -> None:
        self._loop.stop(timeout)
        metrics.unwatch(f"outbox:{self._name}", self.backlog)
