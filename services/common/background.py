"""One background thread that repeats a round of work: at once while rounds find work, else
after an interval or as soon as someone wakes it (the outbox relays, notify's dispatcher).
A round that raises is logged and retried after the interval, never kills the thread. Each
round is a run of the job named after the loop (``job_runs_total``, ``job_failures_total``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from services.common import metrics

log = logging.getLogger(__name__)


class BackgroundLoop:
    def __init__(self, name: str, round_: Callable[[], bool], interval_seconds: float) -> None:
        """``round_`` returns whether it found work (then the next round starts at once)."""
        self.name = name
        self._round = round_
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Work arrived: run a round now instead of at the next interval."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Whether the thread ended within ``timeout`` (a round still running past it goes on
        to its end in the background)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with metrics.job(self.name):
                    busy = self._round()
            except Exception:
                log.exception("%s round failed; retrying", self.name)
                busy = False
            if not busy:
                self._wake.wait(self._interval)
                self._wake.clear()
