"""A small read-mostly dataset held in memory, reloaded when stale.

For master data that is read on every request and changed rarely (the product catalogue), a
database round trip and an ORM mapping per read cost far more than the read itself. A snapshot
is reloaded after a local write (``invalidate``) and at least every ``max_age_seconds``, which
bounds how long another replica's write can go unseen.
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
    ) -> None:
        self._load = load
        self._max_age = max_age_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value: T | None = None
        self._loaded_at = 0.0
        self._generation = 0

    def get(self) -> T:
        value, loaded_at = self._value, self._loaded_at
        if value is not None and self._monotonic() - loaded_at < self._max_age:
            return value
        with self._lock:
            if self._value is None or self._monotonic() - self._loaded_at >= self._max_age:
                generation = self._generation
                fresh = self._load()
                if generation == self._generation:  # no write raced with this load
                    self._value, self._loaded_at = fresh, self._monotonic()
                return fresh
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._value = None
