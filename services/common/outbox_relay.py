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

Delivering: a round's rows are handed to ``deliver`` by up to ``RelayPolicy.concurrency``
threads of a pool the relay owns (made by ``start``, shut down by ``stop``; ``run_once`` and
``drain`` on a relay not started use a pool of their own for the call). ``order_key(event)``,
supplied by the relay's owner, says which rows must keep their order: rows with the same key go
one after another in ``seq`` order, in one worker; rows with different keys, or with None (the
default for every row), may go at once. A row whose delivery fails (to be retried) holds back the
later rows of its key: they are not tried in that round (no attempt counted, no backoff), nor in
the rounds after while the failed row backs off, and then follow it in order. A dead-lettered
row, or one that has reached ``max_attempts``, holds nothing back beyond its round: it will never
be delivered. ``concurrency=1`` delivers every row in the round's own thread, in ``seq`` order,
as before. Each delivery runs in a copy of the round's context (``contextvars``), so it acts as
the relay's caller (``running_as``) in a worker thread too. Order holds within one relay: two
replicas claim different rows (SKIP LOCKED) and deliver them at once, so rows of one key split
between two replicas' claims may cross (as they did before; the receivers' checks, e.g. a
release finding no reservation, are what stands then).

A ``chain_key`` wider than the ``order_key`` puts rows of several keys in one chain: they are
delivered in ``seq`` order, one after another, while a failure still holds back only the later
rows of its own ``order_key``. The scheduler's stock commands are one chain (the booking made
first reserves first), each appointment's its own key (one failing row does not stop every
other appointment's reservation).

A round's outcomes are written together once its rows have been tried: one UPDATE marks every
row delivered, and each failed or dead-lettered row gets its own attempts and last_error; on
PostgreSQL that is one statement (services.common.joint_writes) before the commit, on SQLite one
transaction. Each row's attempts come from the claiming read, so a failure costs no read of its
own. A crash before the outcomes are written delivers the round's rows again, which the
receivers' idempotency absorbs.

Failures: ``attempts`` is incremented and ``last_error`` set; the row is retried after an
exponential backoff with jitter (base * 2^(attempts-1), capped). The backoff schedule is kept
in memory, so after a restart a failed row is tried again at once (before the later rows of
its key: the claim is in ``seq`` order). A failing row does not hold back the rows after it
that have another key or none (notifications need no strict order; receivers dedupe). With
``max_attempts`` set, rows that reached it are left alone (still undelivered, visible with
their last_error) instead of retried for ever.

A receiver's refusal that no retry can change (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION:
``deliver`` raises PermanentFailure, see ``publish_or_dead_letter``) dead-letters the row at
once: it stays undelivered with ``attempts = DEAD_LETTER_ATTEMPTS`` and its last_error, for a
person to look at, instead of being retried every few minutes for ever.

Observed: each row is delivered in a span whose parent is the row's traceparent, given to the
span explicitly in whichever thread delivers it (so the receiver's work joins the trace of the
call that wrote the row); deliveries are counted by result (``outbox_deliveries_total``; a row
held back is not a delivery and is not counted), each round is a run of the job named after
the relay, and the backlog (rows pending, the oldest one's age, dead letters) is read at each
scrape.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import random
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
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
# Rows with the same key are delivered in seq order, one after another; None: in any order.
OrderKey = Callable[[OutgoingEvent], Hashable | None]


def no_order(_: OutgoingEvent) -> None:
    """The default ``order_key``: every row may go at any time (receivers dedupe)."""
    return None


@dataclass(frozen=True)
class RelayPolicy:
    batch_size: int = 100
    retry_base: dt.timedelta = dt.timedelta(seconds=1)
    retry_max: dt.timedelta = dt.timedelta(minutes=5)
    max_attempts: int | None = None
    interval_seconds: float = 1.0
    concurrency: int = 4  # deliveries at once; 1 = one after another in the round's thread

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")


@dataclass(frozen=True)
class RelayRound:
    delivered: int
    failed: int
    held: int = 0  # not tried: behind an earlier row of their key that failed


class _Held:
    """The outcome of a row held back behind its key's failed row."""


_HELD = _Held()
# a claimed row with its attempts so far and its order key
_Row = tuple[OutgoingEvent, int, Hashable | None]
# what became of it: None delivered, the exception it failed with, or held back
_Tried = tuple[OutgoingEvent, int, Hashable | None, Exception | _Held | None]


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
        order_key: OrderKey = no_order,
        chain_key: OrderKey | None = None,
        jitter: Callable[[], float] = random.random,
        name: str = "outbox-relay",
    ) -> None:
        """The background rounds act as ``caller``, the sending service; ``order_key`` names
        the rows that must keep their order, ``chain_key`` (``order_key`` when not given) the
        rows delivered one after another (module docstring, "Delivering")."""
        self.db = db
        self.table = table
        self.deliver = deliver
        self.clock = clock
        self.policy = policy or RelayPolicy()
        self.order_key = order_key
        self.chain_key = chain_key or order_key
        self._jitter = jitter
        self._name = name
        self._not_before: dict[str, dt.datetime] = {}
        # key -> the row id that failed and backs off: the later rows of the key wait for it
        self._blocked_by: dict[Hashable, str] = {}
        # row id -> key of the rows held back behind a blocked key (left out of the claims)
        self._held: dict[str, Hashable] = {}
        self._pool: ThreadPoolExecutor | None = None
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
        """Deliver the undelivered rows that are due now, in ``seq`` order (per order key)."""
        with self._workers() as pool:
            return self._round(pool)

    def drain(self, limit: int = 1000) -> RelayRound:
        """``run_once`` until a round delivers nothing (tests, shutdown)."""
        delivered = failed = held = 0
        with self._workers() as pool:
            for _ in range(limit):
                r = self._round(pool)
                delivered += r.delivered
                failed += r.failed
                held += r.held
                if r.delivered == 0:
                    break
        return RelayRound(delivered, failed, held)

    def _round(self, pool: ThreadPoolExecutor | None) -> RelayRound:
        now = self.clock.now()
        blocked = self._blocked(now)
        if self.db.dialect == "postgresql":
            with self.db.write() as session:
                due = self._due(session, now, blocked, lock=True)
                return self._deliver_all(session, due, blocked, pool)
        with self.db.read() as session:
            due = self._due(session, now, blocked, lock=False)
        return self._deliver_all(None, due, blocked, pool)

    def _blocked(self, now: dt.datetime) -> frozenset[Hashable]:
        """The keys whose failed row still backs off. A key whose row is due again is free:
        that row is claimed with the rows held behind it, and goes first."""
        for key, row_id in list(self._blocked_by.items()):
            if self._not_before.get(row_id, now) <= now:
                del self._blocked_by[key]
        self._held = {i: k for i, k in self._held.items() if k in self._blocked_by}
        return frozenset(self._blocked_by)

    def _due(
        self, session: Session, now: dt.datetime, blocked: frozenset[Hashable], *, lock: bool
    ) -> list[_Row]:
        """The rows due now, each with its attempts so far and its order key."""
        t = self.table
        waiting = [k for k, at in self._not_before.items() if at > now]
        waiting += [i for i, key in self._held.items() if key in blocked]
        query = select(t).where(t.c.delivered_at.is_(None))
        limit = min(self.policy.max_attempts or DEAD_LETTER_ATTEMPTS, DEAD_LETTER_ATTEMPTS)
        query = query.where(t.c.attempts < limit)
        if waiting:
            query = query.where(t.c.id.not_in(waiting))
        query = query.order_by(t.c.seq).limit(self.policy.batch_size)
        if lock:
            query = query.with_for_update(skip_locked=True)
        rows = [(outgoing(r), r.attempts) for r in session.execute(query)]
        return [(event, attempts, self.order_key(event)) for event, attempts in rows]

    def _deliver_all(
        self,
        session: Session | None,
        due: list[_Row],
        blocked: frozenset[Hashable],
        pool: ThreadPoolExecutor | None,
    ) -> RelayRound:
        delivered: list[str] = []
        failed: list[dict[str, str]] = []
        dead: list[dict[str, str]] = []
        held = 0
        for event, attempts, key, outcome in self._try_all(due, blocked, pool):
            if outcome is None:
                self._counted["delivered"].inc()
                self._not_before.pop(event.id, None)
                delivered.append(event.id)
            elif isinstance(outcome, _Held):
                held += 1
                if key in self._blocked_by:
                    self._held[event.id] = key
            elif isinstance(outcome, PermanentFailure):
                self._counted["dead_lettered"].inc()
                dead.append(self._dead(event, outcome))
            else:  # any other failure: count it, back off, keep going
                self._counted["failed"].inc()
                failed.append(self._failed(event, attempts + 1, outcome))
                if key is not None and attempts + 1 < (
                    self.policy.max_attempts or DEAD_LETTER_ATTEMPTS
                ):
                    self._blocked_by[key] = event.id  # its later rows wait for its retry
        marked = [{"ids": delivered, "at": self.clock.now()}] if delivered else []
        writes: list[Write] = [
            (self._mark_delivered, marked),
            (self._mark_failed, failed),
            (self._mark_dead, dead),
        ]
        if session is not None:
            write_all(session, writes)
        elif delivered or failed or dead:
            with self.db.write() as own:
                write_all(own, writes)
        return RelayRound(len(delivered), len(failed) + len(dead), held)

    def _try_all(
        self, due: list[_Row], blocked: frozenset[Hashable], pool: ThreadPoolExecutor | None
    ) -> list[_Tried]:
        """Every row of the round tried (or held back), in ``seq`` order: one chain a key (its
        rows one after another), one a row without a key; ``concurrency`` workers of ``pool``
        take the chains in ``seq`` order of their first rows, each chain whole."""
        if pool is None or len(due) < 2:
            return self._try(due, blocked)
        chains: list[list[_Row]] = []
        of_key: dict[Hashable, list[_Row]] = {}
        for row in due:
            key = self.chain_key(row[0])
            if key is None:
                chains.append([row])
            elif key in of_key:
                of_key[key].append(row)
            else:
                of_key[key] = [row]
                chains.append(of_key[key])
        if len(chains) == 1:
            return self._try(due, blocked)
        queue = deque(chains)

        def work() -> list[_Tried]:
            """Chains taken one by one until none is left (deque.popleft is atomic)."""
            tried: list[_Tried] = []
            while True:
                try:
                    chain = queue.popleft()
                except IndexError:
                    return tried
                tried += self._try(chain, blocked)

        # each worker in a copy of this thread's context: the caller the round acts as
        # (identity.running_as) holds in the worker too
        futures: list[Future[list[_Tried]]] = [
            pool.submit(contextvars.copy_context().run, work)
            for _ in range(min(self.policy.concurrency, len(chains)))
        ]
        wait(futures)  # every delivery over before the outcomes are written (or a bug raised)
        tried = [outcome for future in futures for outcome in future.result()]
        return sorted(tried, key=lambda t: t[0].seq)

    def _try(self, rows: list[_Row], blocked: frozenset[Hashable]) -> list[_Tried]:
        """Deliver ``rows`` one after another; a row whose key failed before it (this round,
        or a row still backing off) is held back, untried."""
        failed_keys = set(blocked)
        tried: list[_Tried] = []
        for event, attempts, key in rows:
            if key is not None and key in failed_keys:
                tried.append((event, attempts, key, _HELD))
                continue
            try:
                with tracing.span(
                    f"outbox {event.topic}",
                    event.traceparent,
                    {"outbox.relay": self._name, "outbox.row_id": event.id},
                ):
                    self.deliver(event)
            except Exception as error:
                tried.append((event, attempts, key, error))
                if key is not None and not isinstance(error, PermanentFailure):
                    failed_keys.add(key)
            else:
                tried.append((event, attempts, key, None))
        return tried

    @contextmanager
    def _workers(self) -> Iterator[ThreadPoolExecutor | None]:
        """The started relay's pool; for a relay not started, one for the call (no thread
        outlives it); none for ``concurrency=1``."""
        if self.policy.concurrency == 1:
            yield None
        elif self._pool is not None:
            yield self._pool
        else:
            with self._new_pool() as pool:
                yield pool

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix=f"{self._name}-")

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
        """The background thread, and the pool its rounds deliver with."""
        if self.policy.concurrency > 1 and self._pool is None:
            self._pool = self._new_pool()
        self._loop.start()

    def wake(self) -> None:
        self._loop.wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the rounds, then the pool: its threads end once the last round's deliveries
        have (if the round did not end within ``timeout``, its unstarted deliveries are
        cancelled and the round's rows go again at the next start)."""
        ended = self._loop.stop(timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=ended, cancel_futures=True)
        metrics.unwatch(f"outbox:{self._name}", self.backlog)
