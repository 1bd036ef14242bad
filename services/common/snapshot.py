"""A small read-mostly dataset held in memory, reloaded when it changed.

For master data that is read on every request and changed rarely (the product catalogue), a
database round trip and an ORM mapping per read cost far more than the read itself. A snapshot
is reloaded after a local write (``invalidate``). Every ``max_age_seconds`` it asks
``version`` (a cheap query: counts and revisions) whether another replica wrote, and reloads
only if the answer changed; without ``version`` it reloads then. Either way another replica's
write goes unseen for at most ``max_age_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(
        self,
        load: Callable[[], T],
        *,
        max_age_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        version: Callable[[], object] | None = None,
    ) -> None:
        self._load = load
        self._max_age = max_age_seconds
        self._monotonic = monotonic
        self._version = version
        self._lock = threading.Lock()
        self._value: T | None = None
        self._loaded_at = 0.0
        self._loaded_version: object = None
        self._generation = 0

    def get(self) -> T:
        value, loaded_at = self._value, self._loaded_at
        if value is not None and self._monotonic() - loaded_at < self._max_age:
            return value
        with self._lock:
            if self._value is not None and self._monotonic() - self._loaded_at < self._max_age:
                return self._value
            generation = self._generation
            # read before loading: a write during the load shows as a change next time
            seen = self._version() if self._version is not None else None
            if self._value is not None and seen is not None and seen == self._loaded_version:
                self._loaded_at = self._monotonic()  # nobody wrote: keep what we hold
                return self._value
            fresh = self._load()
            if generation == self._generation:  # no local write raced with this load
                self._value, self._loaded_at = fresh, self._monotonic()
                self._loaded_version = seen
            return fresh

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._value = None
