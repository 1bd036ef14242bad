"""Durable delivery: claim due deliveries, send them through the channel adapters, record
every attempt, retry with exponential backoff and jitter, dead-letter when retries run out.

Claiming is one short transaction: due rows are selected (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several replicas never claim the same row; the write lock on SQLite), marked
SENDING with a lease, and an attempt row is opened. Sending happens outside any transaction;
the result is written in a second one, only if the delivery is still ours (same attempt
number, still SENDING). A dispatcher killed mid-send leaves the row SENDING; when its lease
passes another claim takes it up again, so nothing is lost — at worst a message is sent twice,
with the same Idempotency-Key / Message-ID so the receiver can tell.

The clock is injected; ``run_once`` does one claim-send-record round, so tests drive delivery
without sleeping.

Observed: each send runs in a span whose parent is the notification's traceparent (the Publish
that accepted it, itself part of the caller's trace); every attempt's outcome, and every
delivery that expired unsent, is counted by channel and result (``notify_deliveries_total``);
the open deliveries by status and how long the oldest due one has waited are read at each
scrape (``backlog``).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from services.common import metrics, tracing
from services.common.background import BackgroundLoop
from services.common.clock import Clock
from services.common.db import Database
from services.common.identity import running_as, service_caller
from services.notify.channels import (
    Adapter,
    OutgoingMessage,
    PermanentFailure,
    TemporaryFailure,
)
from services.notify.domain.model import OPEN, Channel, QuietHours, Status
from services.notify.domain.timing import backoff, quiet_until
from services.notify.store.models import (
    AttemptRow,
    DeliveryRow,
    NotificationRow,
    SubscriberRow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchPolicy:
    batch_size: int = 50
    workers: int = 8
    max_attempts: int = 8
    retry_base: dt.timedelta = dt.timedelta(seconds=30)
    retry_max: dt.timedelta = dt.timedelta(hours=1)
    lease: dt.timedelta = dt.timedelta(minutes=2)
    interval_seconds: float = 1.0


@dataclass(frozen=True)
class _Claimed:
    message: OutgoingMessage
    attempt: int
    traceparent: str | None = None  # the notification's: its Publish call


@dataclass(frozen=True)
class _Outcome:
    status: Status
    error: str


class Dispatcher:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        adapters: Mapping[Channel, Adapter],
        policy: DispatchPolicy | None = None,
        *,
        jitter: Callable[[], float] = random.random,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.adapters = dict(adapters)
        self.policy = policy or DispatchPolicy()
        self._jitter = jitter
        self._on_change = on_change
        self._loop = BackgroundLoop(
            "notify-dispatcher",
            running_as(service_caller("notify"), lambda: self.run_once() > 0),
            self.policy.interval_seconds,
        )
        self._pool: ThreadPoolExecutor | None = None
        metrics.watch("notify-deliveries", self.backlog)

    # -- one round ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim what is due now, send it, record the outcomes. Returns how many were sent."""
        claimed = self._claim()
        if not claimed:
            return 0
        if self._pool is not None and len(claimed) > 1:
            outcomes = list(self._pool.map(self._send, claimed))
        else:
            outcomes = [self._send(c) for c in claimed]
        for item, outcome in zip(claimed, outcomes, strict=True):
            self._record(item, outcome)
        self._on_change()
        return len(claimed)

    def drain(self, limit: int = 1000) -> int:
        """``run_once`` until nothing is due (tests; bounded)."""
        total = 0
        for _ in range(limit):
            n = self.run_once()
            if n == 0:
                break
            total += n
        return total

    def _claim(self) -> list[_Claimed]:
        now = self.clock.now()
        p = self.policy
        due = or_(
            and_(
                DeliveryRow.status.in_([s.value for s in OPEN]),
                DeliveryRow.next_attempt_at <= now,
            ),
            and_(DeliveryRow.status == Status.SENDING.value, DeliveryRow.lease_until <= now),
        )
        query = select(DeliveryRow).where(due).order_by(DeliveryRow.next_attempt_at)
        query = query.limit(p.batch_size)
        if self.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        claimed: list[_Claimed] = []
        with self.db.write() as session:
            rows = list(session.scalars(query))
            if not rows:
                return []
            notes = {
                n.id: n
                for n in session.scalars(
                    select(NotificationRow).where(
                        NotificationRow.id.in_({r.notification_id for r in rows})
                    )
                )
            }
            subs = {
                s.id: s
                for s in session.scalars(
                    select(SubscriberRow).where(
                        SubscriberRow.id.in_({r.subscriber_id for r in rows})
                    )
                )
            }
            for row in rows:
                note = notes[row.notification_id]
                sub = subs[row.subscriber_id]
                if row.status == Status.SENDING.value:  # abandoned mid-attempt (crash)
                    self._close_attempt(
                        session,
                        row.id,
                        row.attempt_count,
                        Status.TEMPORARY_FAILURE,
                        now,
                        "abandoned: the dispatcher stopped before recording the outcome",
                    )
                    if row.attempt_count >= p.max_attempts:
                        row.status = Status.PERMANENT_FAILURE.value
                        row.last_error = "retries exhausted (last attempt abandoned)"
                        row.lease_until = None
                        row.updated_at = now
                        continue
                if note.expires_at is not None and now >= note.expires_at:
                    metrics.NOTIFY_DELIVERIES.labels(row.channel, "expired").inc()
                    row.status = Status.EXPIRED.value
                    row.lease_until = None
                    row.updated_at = now
                    continue
                if not row.critical:
                    quiet = None
                    if sub.quiet_start is not None and sub.quiet_end is not None:
                        quiet = QuietHours(
                            dt.time.fromisoformat(sub.quiet_start),
                            dt.time.fromisoformat(sub.quiet_end),
                        )
                    release = quiet_until(now, ZoneInfo(sub.time_zone), quiet)
                    if release > now:  # quiet hours (perhaps set after Publish): wait
                        if row.status == Status.SENDING.value:
                            row.status = Status.TEMPORARY_FAILURE.value
                        row.next_attempt_at = release
                        row.deferred = True
                        row.lease_until = None
                        row.updated_at = now
                        continue
                row.status = Status.SENDING.value
                row.attempt_count += 1
                row.lease_until = now + p.lease
                row.updated_at = now
                session.add(
                    AttemptRow(
                        delivery_id=row.id,
                        number=row.attempt_count,
                        started_at=now,
                        finished_at=None,
                        outcome=Status.SENDING.value,
                        error="",
                    )
                )
                claimed.append(
                    _Claimed(
                        OutgoingMessage(
                            delivery_id=row.id,
                            notification_id=row.notification_id,
                            topic=note.topic,
                            channel=Channel(row.channel),
                            destination=row.destination,
                            subject=row.subject,
                            text=row.body_text,
                            html=row.body_html,
                            webhook_secret=sub.webhook_secret,
                            sent_at=now,
                        ),
                        row.attempt_count,
                        note.traceparent,
                    )
                )
        return claimed

    def _send(self, item: _Claimed) -> _Outcome:
        message = item.message
        attributes = {"notify.delivery_id": message.delivery_id, "notify.attempt": item.attempt}
        with tracing.span(f"deliver {message.channel.value}", item.traceparent, attributes):
            return self._send_now(item)

    def _send_now(self, item: _Claimed) -> _Outcome:
        adapter = self.adapters.get(item.message.channel)
        if adapter is None:
            return _Outcome(Status.PERMANENT_FAILURE, f"no adapter for {item.message.channel}")
        try:
            adapter.send(item.message)
        except PermanentFailure as error:
            return _Outcome(Status.PERMANENT_FAILURE, str(error)[:1000])
        except TemporaryFailure as error:
            return _Outcome(Status.TEMPORARY_FAILURE, str(error)[:1000])
        except Exception as error:  # an adapter bug must not kill the dispatcher
            log.exception("adapter %s failed", item.message.channel.value)
            return _Outcome(Status.TEMPORARY_FAILURE, f"{type(error).__name__}: {error}"[:1000])
        return _Outcome(Status.DELIVERED, "")

    def _record(self, item: _Claimed, outcome: _Outcome) -> None:
        now = self.clock.now()
        p = self.policy
        with self.db.write() as session:
            query = select(DeliveryRow).where(DeliveryRow.id == item.message.delivery_id)
            if self.db.dialect == "postgresql":
                query = query.with_for_update()
            row = session.scalars(query).one()
            if row.status != Status.SENDING.value or row.attempt_count != item.attempt:
                return  # reclaimed by another dispatcher after our lease passed
            status = outcome.status
            error = outcome.error
            self._close_attempt(session, row.id, item.attempt, status, now, error)
            if status is Status.TEMPORARY_FAILURE and row.attempt_count >= p.max_attempts:
                status = Status.PERMANENT_FAILURE
                error = f"retries exhausted after {row.attempt_count} attempts: {error}"[:1000]
            metrics.NOTIFY_DELIVERIES.labels(row.channel, status.value.lower()).inc()
            row.status = status.value
            row.lease_until = None
            row.updated_at = now
            row.last_error = error
            if status is Status.DELIVERED:
                row.delivered_at = now
            elif status is Status.TEMPORARY_FAILURE:
                row.next_attempt_at = now + backoff(
                    row.attempt_count, base=p.retry_base, cap=p.retry_max, jitter=self._jitter()
                )

    @staticmethod
    def _close_attempt(
        session: Session,
        delivery_id: str,
        number: int,
        outcome: Status,
        now: dt.datetime,
        error: str,
    ) -> None:
        session.execute(
            update(AttemptRow)
            .where(
                AttemptRow.delivery_id == delivery_id,
                AttemptRow.number == number,
                AttemptRow.finished_at.is_(None),
            )
            .values(finished_at=now, outcome=outcome.value, error=error[:1000])
        )

    def backlog(self) -> list[metrics.Reading]:
        """Open deliveries by status, and how long the oldest due one has been due (one query
        over the (status, next_attempt_at) index)."""
        now = self.clock.now()
        open_ = [s.value for s in OPEN] + [Status.SENDING.value]
        query = (
            select(DeliveryRow.status, func.count(), func.min(DeliveryRow.next_attempt_at))
            .where(DeliveryRow.status.in_(open_))
            .group_by(DeliveryRow.status)
        )
        with self.db.single_read() as connection:
            rows = connection.execute(query).all()
        counts = dict.fromkeys(open_, 0)
        oldest_due = now
        for status, count, first in rows:
            counts[status] = count
            if status != Status.SENDING.value and first is not None:
                oldest_due = min(oldest_due, first)
        readings = [
            metrics.Reading("notify_deliveries_open", {"status": status}, count)
            for status, count in counts.items()
        ]
        waited = (now - oldest_due).total_seconds()
        readings.append(metrics.Reading("notify_oldest_due_delivery_age_seconds", {}, waited))
        return readings

    # -- the background thread ----------------------------------------------------------------

    def start(self) -> None:
        if self.policy.workers > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.policy.workers, thread_name_prefix="notify-send")
        self._loop.start()

    def wake(self) -> None:
        """Something was published: look now instead of at the next interval."""
        self._loop.wake()

    def stop(self, timeout: float = 10.0) -> None:
        self._loop.stop(timeout)
        metrics.unwatch("notify-deliveries", self.backlog)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
