"""Group commit: concurrent callers that each need an item durable share one transaction.

The first caller to find nobody gathering becomes a leader, takes everything queued so far (its
own item included) and writes it in one transaction; the others wait for that write. One commit
serves every call that arrived meanwhile, and nobody returns before its own item is stored. No
thread of its own: nothing to start or stop.

Up to ``writers`` batches may be written at once, one gathering at a time: on PostgreSQL a
commit waits for its WAL flush, and with one batch at a time every call in the service would
queue behind that wait with the processor idle; the server flushes concurrent commits together.
SQLite has one writer: one batch at a time.

Calls on their way (``expect``: a patient read has started and will submit) make a leader
linger up to ``linger`` seconds for them, so a busy service writes a few records per commit
instead of one per call (measured: without it, 1.2 records per commit at 700 reads/s, each
commit costing as much as the read); an idle one, with nobody on the way, writes at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_BATCH = 256
LINGER_SECONDS = 0.005


class WriteFailed(Exception):
    """The shared write failed; no item of its batch was stored."""


class _Slot:
    """One caller's item: the caller sleeps on its own gate, opened when the item is stored (or
    its write failed), or when the caller is handed the lead. The gate is a bare lock, taken
    at birth and released to wake the caller: a threading.Event would build a Condition and a
    fresh waiter lock for every wait, measurable at a thousand reads a second."""

    __slots__ = ("done", "error", "gate", "lead")

    def __init__(self) -> None:
        self.done = False
        self.lead = False
        self.error: BaseException | None = None
        self.gate = threading.Lock()
        self.gate.acquire()

    def wake(self) -> None:
        """Open the gate (at most once per wait: the lock guards itself)."""
        if self.gate.locked():
            self.gate.release()


class GroupCommit(Generic[T]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], None],
        max_batch: int = MAX_BATCH,
        linger: float = LINGER_SECONDS,
        writers: int = 1,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._linger = linger
        self._max_writers = writers
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # only a lingering leader waits on it
        self._queue: list[tuple[T, _Slot]] = []
        self._writers = 0  # leaders gathering or writing
        self._gathering = False  # one leader is collecting its batch
        self._expected = 0  # callers on their way that have not submitted

    def expect(self) -> None:
        """A caller will submit soon (or call ``unexpect``)."""
        with self._lock:
            self._expected += 1

    def unexpect(self) -> None:
        """An expected caller will not submit after all."""
        with self._lock:
            self._expected -= 1
            self._wake_gatherer()

    def _wake_gatherer(self) -> None:
        """Under the lock: wake a lingering leader only when its wait is over (nobody else on
        the way, or a full batch). Woken on every arrival instead, it woke and slept again
        once a call: measured, about a tenth of the context switches of a busy service."""
        if self._gathering and (self._expected <= 0 or len(self._queue) >= self._max_batch):
            self._arrived.notify()

    def submit(self, item: T, expected: bool = False) -> None:
        """Return once ``item`` is stored; WriteFailed when its batch's write failed.
        ``expected``: this caller announced itself with ``expect``."""
        slot = _Slot()
        with self._lock:
            if expected:
                self._expected -= 1
            self._queue.append((item, slot))
            lead = self._may_lead()
            if not lead:
                self._wake_gatherer()
        while True:
            if lead:
                self._lead()
            if slot.done:
                break
            slot.gate.acquire()
            if slot.done:
                break
            lead, slot.lead = slot.lead, False
        if slot.error is not None:
            raise WriteFailed("the audit record could not be stored") from slot.error

    def _may_lead(self) -> bool:
        """Under the lock: whether a caller may start gathering a batch now (and if so, it
        does)."""
        if self._gathering or self._writers >= self._max_writers:
            return False
        self._writers += 1
        self._gathering = True
        return True

    def _lead(self) -> None:
        """Write the queue's oldest items (after lingering for expected callers), then hand
        the lead to the oldest item still queued when nobody else gathers."""
        with self._lock:
            deadline = time.monotonic() + self._linger
            while self._expected > 0 and len(self._queue) < self._max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            self._gathering = False
            if self._queue and self._may_lead():  # more than a batch: the next one gathers
                self._hand_lead()
        error: BaseException | None = None
        try:
            self._write([queued for queued, _ in batch])
        except BaseException as failure:  # every waiter of the batch must learn it
            error = failure
        with self._lock:
            for _, waiting in batch:
                waiting.done = True
                waiting.error = error
                waiting.wake()
            self._writers -= 1
            if self._queue and self._may_lead():
                self._hand_lead()

    def _hand_lead(self) -> None:
        """Under the lock, after ``_may_lead``: the oldest queued caller leads."""
        successor = self._queue[0][1]
        successor.lead = True
        successor.wake()
