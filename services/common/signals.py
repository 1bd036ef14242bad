"""Waiting in the main thread for SIGINT or SIGTERM, whichever thread the kernel hands it to.

A signal sent to a process goes to any one of its threads that does not block it. Python runs
its handler later, in the main thread, but only when the main thread executes bytecode: a main
thread blocked on a lock (``threading.Event().wait()``) is woken only by a signal delivered to
that very thread. When two arrive together, as when Ctrl-C sends SIGINT to a whole process
group and the launcher sends SIGTERM a moment later, the second goes to another thread (the
main thread already has one pending), that thread takes both, and the main thread's wait is
never interrupted: the service hangs until it is killed.

So the wait here is on a socket that Python's C-level handler writes the signal number to
(``signal.set_wakeup_fd``) from whatever thread ran it: the main thread wakes either way.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_WAKE = b"\x00"  # no signal has number 0: wake() without a signal


class SignalWaiter:
    """Installs no-op handlers for SIGINT and SIGTERM and a wakeup socket; ``wait`` returns the
    first of them received since, including one that arrived before ``wait`` was called (during
    start-up, say). Only in the main thread, as ``signal.signal`` requires."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self._signals = signals
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._received: signal.Signals | None = None
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _ignore) for sig in signals}

    @property
    def received(self) -> signal.Signals | None:
        """The first stop signal received so far, without waiting."""
        self._drain()
        return self._received

    def wait(self, timeout: float | None = None) -> signal.Signals | None:
        """Block until a stop signal, ``wake()`` or ``timeout`` seconds; the signal, or None."""
        if self.received is None:
            select.select([self._read], [], [], timeout)
        return self.received

    def wake(self) -> None:
        """Make a waiting ``wait`` return (from any thread): something else needs a look."""
        with contextlib.suppress(OSError):  # full (a wake-up is pending already), or closed
            self._write.send(_WAKE)

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._read.close()
        self._write.close()

    def __enter__(self) -> SignalWaiter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _drain(self) -> None:
        while True:
            try:
                data = self._read.recv(256)
            except BlockingIOError:
                return
            for number in data:
                if self._received is None and number in self._signals:
                    self._received = signal.Signals(number)


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The work is done by the wakeup socket; a handler must exist so the signal does not kill
    the process (SIGTERM's default) or raise KeyboardInterrupt at an arbitrary point."""
