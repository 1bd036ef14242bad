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
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from services.common import metrics, tracing
from services.common.background import BackgroundLoop
from services.common.clock import Clock
from services.common.db import Database
from services.common.identity import running_as, service_caller
from services.notify.adapters.channels import (
    Adapter,
    OutgoingMessage,
    PermanentFailure,
    TemporaryFailure,
)
from services.notify.domain.model import Channel, Status
from services.notify.domain.timing import backoff, quiet_until
from services.notify.domain.views import DueDelivery
from services.notify.store import deliveries

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


def _message(d: DueDelivery, now: dt.datetime) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=d.id,
        notification_id=d.notification_id,
        topic=d.topic,
        channel=d.channel,
        destination=d.destination,
        subject=d.subject,
        text=d.body_text,
        html=d.body_html,
        webhook_secret=d.webhook_secret,
        sent_at=now,
    )


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
        claimed = self.claim()
        if not claimed:
            return 0
        if self._pool is not None and len(claimed) > 1:
            outcomes = list(self._pool.map(self._send, claimed))
        else:
            outcomes = [self._send(c) for c in claimed]
        self._record(list(zip(claimed, outcomes, strict=True)))
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

    def claim(self) -> list[_Claimed]:
        """In one short transaction, decide about every due delivery: an attempt abandoned by a
        stopped dispatcher is closed as a temporary failure (and the delivery given up when
        that was its last); an expired notification's delivery expires; a non-critical one in
        its subscriber's quiet hours (perhaps set after Publish) waits for their end; the rest
        are leased to this dispatcher, each with a new attempt, and returned to be sent."""
        now = self.clock.now()
        p = self.policy
        claimed: list[_Claimed] = []
        starting: list[DueDelivery] = []
        with self.db.write() as session:
            for d in deliveries.due(session, now, p.batch_size):
                if d.status is Status.SENDING:  # abandoned mid-attempt (crash)
                    deliveries.close_attempt(
                        session,
                        d.id,
                        d.attempt_count,
                        Status.TEMPORARY_FAILURE,
                        now,
                        "abandoned: the dispatcher stopped before recording the outcome",
                    )
                    if d.attempt_count >= p.max_attempts:
                        deliveries.end(
                            session,
                            d.id,
                            Status.PERMANENT_FAILURE,
                            now,
                            "retries exhausted (last attempt abandoned)",
                        )
                        continue
                if d.expires_at is not None and now >= d.expires_at:
                    metrics.NOTIFY_DELIVERIES.labels(d.channel.value, "expired").inc()
                    deliveries.end(session, d.id, Status.EXPIRED, now)
                    continue
                if not d.critical:
                    release = quiet_until(now, ZoneInfo(d.time_zone), d.quiet_hours)
                    if release > now:
                        deliveries.defer(session, d, release, now)
                        continue
                starting.append(d)
                claimed.append(_Claimed(_message(d, now), d.attempt_count + 1, d.traceparent))
            deliveries.start_attempts(session, starting, now, now + p.lease)
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

    def _record(self, sent: Sequence[tuple[_Claimed, _Outcome]]) -> None:
        """Write the batch's outcomes in one transaction, each unless another dispatcher has
        taken its delivery up since (our lease passed): a temporary failure is retried after a
        backoff with jitter until ``max_attempts``, then given up as a permanent one. (A
        transaction per delivery made the outcomes half of a drain's time.)"""
        now = self.clock.now()
        p = self.policy
        recorded: list[deliveries.Outcome] = []
        counted: list[tuple[str, str]] = []
        with self.db.write() as session:
            current = deliveries.sending(session, [item.message.delivery_id for item, _ in sent])
            for item, outcome in sent:
                state = current.get(item.message.delivery_id)
                if state is None or state.status is not Status.SENDING:
                    continue  # reclaimed by another dispatcher after our lease passed
                if state.attempt_count != item.attempt:
                    continue
                status = outcome.status
                error = outcome.error
                if status is Status.TEMPORARY_FAILURE and state.attempt_count >= p.max_attempts:
                    status = Status.PERMANENT_FAILURE
                    error = f"retries exhausted after {state.attempt_count} attempts: {error}"
                retry_at = None
                if status is Status.TEMPORARY_FAILURE:
                    retry_at = now + backoff(
                        state.attempt_count,
                        base=p.retry_base,
                        cap=p.retry_max,
                        jitter=self._jitter(),
                    )
                recorded.append(
                    deliveries.Outcome(
                        item.message.delivery_id,
                        item.attempt,
                        outcome.status,
                        outcome.error,
                        status,
                        error[:1000],
                        retry_at,
                    )
                )
                counted.append((state.channel.value, status.value.lower()))
            deliveries.record(session, recorded, now)
        for channel, result in counted:  # counted once committed
            metrics.NOTIFY_DELIVERIES.labels(channel, result).inc()

    def backlog(self) -> list[metrics.Reading]:
        """Open deliveries by status, and how long the oldest due one has been due."""
        now = self.clock.now()
        with self.db.single_read() as connection:
            rows = deliveries.backlog(connection)
        counts = dict.fromkeys(deliveries.OPEN_OR_SENDING, 0)
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
