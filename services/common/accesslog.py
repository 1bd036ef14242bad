"""The access log: one line per call, in the process's log format (services.common.logs):
``method``, ``code``, ``duration_ms``, ``request_id``, ``peer`` and, when the call is traced,
``trace_id`` and ``span_id``. Ids only: never a request's fields.

A request thread does not go through ``logging``: a LogRecord per call, made and handed over in
the caller, cost about 40 % of a small RPC's throughput on our 2-core machines. Here the caller
only enqueues a tuple; one writer thread formats each with the process's formatter, straight
from its fields (``Lines.info_line``: the same text, no LogRecord, whose constructor asks the
system for the process id on every line), and writes them in batches. The writer waits
``LINGER_SECONDS`` after a line arrives before it writes, so that under load it wakes a few
times a second instead of once a call: each wake-up took the GIL from the request threads,
and with the LogRecords the writer was a fifth of a busy service's Python time (py-spy
``--gil``, CalculateDose at 700 calls/s).
"""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from typing import TextIO

from services.common.logs import Lines, TextLines, record_for

LINGER_SECONDS = 0.05
_STOP = object()
_Entry = tuple[float, str, str, float, str, str, str, str]


class AccessLog:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self._stream = stream
        self.enabled = enabled
        self._formatter: logging.Formatter = TextLines("-")
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="access-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def configure(
        self, formatter: logging.Formatter, *, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        """Write with the process's formatter (services.common.logs.configure_logging)."""
        self._formatter = formatter
        self._stream = stream
        self.enabled = enabled

    def record(
        self,
        method: str,
        code: str,
        duration_ms: float,
        request_id: str,
        peer: str = "",
        trace_id: str = "",
        span_id: str = "",
    ) -> None:
        if self.enabled:
            self._queue.put(
                (time.time(), method, code, duration_ms, request_id, peer, trace_id, span_id)
            )

    def flush(self, timeout: float = 5.0) -> None:
        """Return once every line recorded so far is written (used at shutdown)."""
        if self._thread.is_alive():
            written = threading.Event()
            self._queue.put(written)
            written.wait(timeout)

    def close(self) -> None:
        """Write what is queued and stop the writer (idempotent; at interpreter exit)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(5)

    def _format(self, item: object) -> str:
        entry: _Entry = item  # type: ignore[assignment]
        when, method, code, duration_ms, request_id, peer, trace_id, span_id = entry
        fields: dict[str, object] = {
            "method": method,
            "code": code,
            "duration_ms": round(duration_ms, 2),
            "request_id": request_id,
            "peer": peer,
        }
        if trace_id:
            fields["trace_id"] = trace_id
            fields["span_id"] = span_id
        formatter = self._formatter
        if isinstance(formatter, Lines):
            return formatter.info_line("grpc.access", "rpc", when, fields) + "\n"
        return formatter.format(record_for("grpc.access", "rpc", when, **fields)) + "\n"

    def _write(self) -> None:
        while True:
            first = self._queue.get()
            if first is not _STOP and not _is_marker(first):
                time.sleep(LINGER_SECONDS)  # let the lines of the next moment join this write
            batch = [first]
            while len(batch) < 5000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines = [self._format(i) for i in batch if i is not _STOP and not _is_marker(i)]
            if lines:
                stream = self._stream or sys.stderr
                stream.write("".join(lines))
                stream.flush()
            for item in batch:
                if _is_marker(item):
                    item.set()  # type: ignore[attr-defined]
            if any(item is _STOP for item in batch):
                return


def _is_marker(item: object) -> bool:
    return isinstance(item, threading.Event)


ACCESS_LOG = AccessLog()
