"""How Subscribe streams are fed and woken.

A stream replays the event log after the client's cursor, then sends live events, with
heartbeats (carrying the cursor to resume from) between them. Each stream sleeps on its own
event: :class:`EventSignal` sets it when Publish or Cancel writes here, when
:class:`EventWatcher` sees another replica's events, or when the stream's call ends.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from infusion.notify.v1 import notify_pb2 as pb
from services.notify.api.messages import event_out, heartbeat_out
from services.notify.domain.views import EventView
from services.notify.usecases.events import EventLog

log = logging.getLogger(__name__)


class EventSignal:
    """Wakes this process's Subscribe streams: each stream listens on its own event, set when
    Publish or Cancel writes here, when :class:`EventWatcher` sees another replica's events,
    or when the stream's call ends (so a stream never sleeps on a gone client)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: set[threading.Event] = set()

    def notify(self) -> None:
        with self._lock:
            for wake in self._listeners:
                wake.set()

    @contextmanager
    def listener(self) -> Iterator[threading.Event]:
        wake = threading.Event()
        with self._lock:
            self._listeners.add(wake)
        try:
            yield wake
        finally:
            with self._lock:
                self._listeners.discard(wake)

    @property
    def listening(self) -> int:
        with self._lock:
            return len(self._listeners)


class EventWatcher:
    """One thread for all of a process's streams: every ``interval`` seconds, while any stream
    listens, it reads the last event sequence and wakes the streams when another replica has
    written past it. (Each stream polling the database itself cost a query per stream per
    interval: 400 a second for 200 idle streams.)"""

    def __init__(
        self, last_sequence: Callable[[], int], signal: EventSignal, interval: float
    ) -> None:
        self._last_sequence = last_sequence
        self._signal = signal
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen = 0

    def check(self) -> None:
        if not self._signal.listening:
            return
        latest = self._last_sequence()
        if latest > self._seen:  # (the first look wakes the streams once: harmless)
            self._seen = latest
            self._signal.notify()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # the database away: streams keep their heartbeats
                log.warning("event watcher could not read the event log", exc_info=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notify-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class EventStreams:
    """This process's Subscribe streams: each runs in its call's thread, reading the log
    through ``events``; ``close`` ends them all (server shutting down)."""

    def __init__(
        self,
        events: EventLog,
        signal: EventSignal,
        *,
        heartbeat_seconds: float,
        idle_seconds: float,
        clock_now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.events = events
        self.signal = signal
        self.heartbeat_seconds = heartbeat_seconds
        self.idle_seconds = idle_seconds
        self.clock_now = clock_now
        self.closing = threading.Event()

    def stream(
        self,
        cursor: int,
        matches: Callable[[EventView], bool],
        context: grpc.ServicerContext,
        *,
        beat_first: bool = False,
    ) -> Iterator[pb.SubscribeResponse]:
        """``beat_first``: a heartbeat first, so a client starting at the end (live_only)
        learns its cursor before any event arrives."""
        with self.signal.listener() as wake:
            context.add_callback(wake.set)
            if beat_first:
                yield heartbeat_out(cursor, self.clock_now())
            yield from self._events(cursor, matches, wake, context)

    def _events(
        self,
        cursor: int,
        matches: Callable[[EventView], bool],
        wake: threading.Event,
        context: grpc.ServicerContext,
    ) -> Iterator[pb.SubscribeResponse]:
        """Replay after ``cursor``, then live events, heartbeats between them. The stream ends
        cleanly (status OK, after a heartbeat carrying the cursor to resume from) when it has
        had no event for ``idle_seconds`` or the server is shutting down; it ends at once when
        the client goes away."""
        batch = 200
        last_beat = last_event = time.monotonic()
        while context.is_active() and not self.closing.is_set():
            wake.clear()
            events = self.events.after(cursor, batch)
            for e in events:
                cursor = e.seq
                if matches(e):
                    last_event = time.monotonic()
                    yield event_out(e)
            if len(events) == batch:
                continue
            now = time.monotonic()
            if now - last_event >= self.idle_seconds:
                break
            if now - last_beat >= self.heartbeat_seconds:
                last_beat = now
                yield heartbeat_out(cursor, self.clock_now())
            due = min(last_beat + self.heartbeat_seconds, last_event + self.idle_seconds)
            wake.wait(max(due - now, 0))
        if context.is_active():
            yield heartbeat_out(cursor, self.clock_now())

    def close(self) -> None:
        """Every stream sends its cursor and ends."""
        self.closing.set()
        self.signal.notify()
