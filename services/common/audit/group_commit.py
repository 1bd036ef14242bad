"""Group commit: concurrent callers that each need an item durable share one transaction.

The first caller to find no write under way becomes the leader, takes everything queued so far
(its own item included) and writes it in one transaction; the others wait for that write, and
whoever is still waiting when it ends leads the next. One commit (one fsync, one lock on the
chain head) serves every call that arrived meanwhile, and nobody returns before its own item is
stored. No thread of its own: nothing to start or stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_BATCH = 256


class WriteFailed(Exception):
    """The shared write failed; no item of its batch was stored."""


class _Slot:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    def __init__(self, write: Callable[[Sequence[T]], None], max_batch: int = MAX_BATCH) -> None:
        self._write = write
        self._max_batch = max_batch
        self._changed = threading.Condition(threading.Lock())
        self._queue: list[tuple[T, _Slot]] = []
        self._writing = False

    def submit(self, item: T) -> None:
        """Return once ``item`` is stored; WriteFailed when its batch's write failed."""
        slot = _Slot()
        with self._changed:
            self._queue.append((item, slot))
        while True:
            with self._changed:
                while not slot.done and self._writing:
                    self._changed.wait()
                if slot.done:
                    break
                self._writing = True  # lead: the queue's oldest items, ours among them or next
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            self._lead(batch)
        if slot.error is not None:
            raise WriteFailed("the audit record could not be stored") from slot.error

    def _lead(self, batch: list[tuple[T, _Slot]]) -> None:
        error: BaseException | None = None
        try:
            self._write([queued for queued, _ in batch])
        except BaseException as failure:  # every waiter of the batch must learn it
            error = failure
        with self._changed:
            for _, waiting in batch:
                waiting.done = True
                waiting.error = error
            self._writing = False
            self._changed.notify_all()
