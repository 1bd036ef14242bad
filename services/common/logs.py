"""Log lines: one format per process, JSON for deployments or text for a terminal.

Every line has the same keys (docs/operations.md, "Observability"): ``time`` (RFC 3339, UTC,
milliseconds, ``Z``), ``level``, ``service``, ``logger``, ``message``, and ``trace_id`` /
``span_id`` when it was written inside a traced call or job; the access line
(services.common.accesslog) adds ``method``, ``code``, ``duration_ms``, ``request_id`` and
``peer``. ``LOG_FORMAT=json`` writes them as one JSON object per line (python-json-logger, a
``logging.Formatter``, so every module keeps using the standard ``logging`` API); ``text``
writes the same fields on one readable line, for ``make run`` and tests.

Request threads only queue records; one listener thread formats and writes them, so a slow
stderr (a pipe, a container log driver) never holds up a call. The trace ids are read in the
caller's thread, where the call's context is current, before the record is queued.

What is logged carries ids, never patient names, birth dates, MRNs or secrets: log the
appointment, patient or reservation id.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any, TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from services.common import tracing
from services.common.settings import LogFormat

_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text up to the "."


def _rfc3339(created: float) -> str:
    """``created`` as RFC 3339, UTC, milliseconds. The text up to the second is kept for the
    next call: the access log stamps hundreds of lines within one second, and strftime was
    a measurable share of its cost."""
    global _second
    whole = int(created)
    micro = round((created - whole) * 1_000_000)  # as datetime rounds: 0.3 is not 0.299
    if micro >= 1_000_000:
        whole, micro = whole + 1, 0
    second, prefix = _second
    if whole != second:
        prefix = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second = (whole, prefix)
    return f"{prefix}{micro // 1000:03d}Z"


class Lines:
    """What both formatters add to ``logging.Formatter``: an INFO line made straight from its
    fields, without a LogRecord (whose constructor asks the system for the process id and the
    thread on every line). The access log writes a line per call this way; the text is the
    one ``format`` gives for the same record (tests/unit/test_observability.py)."""

    def info_line(self, logger: str, message: str, created: float, fields: dict[str, Any]) -> str:
        raise NotImplementedError


class JsonLines(JsonFormatter, Lines):
    """One JSON object per line: the documented keys, then the record's extras."""

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(
            "{asctime}{levelname}{service}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _rfc3339(record.created)

    def info_line(self, logger: str, message: str, created: float, fields: dict[str, Any]) -> str:
        line = {
            "time": _rfc3339(created),
            "level": "INFO",
            "service": self.service,
            "logger": logger,
            "message": message,
            **fields,
        }
        return self.jsonify_log_record(line)


# Attributes of every LogRecord (and those the formatters add): not extras.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class TextLines(logging.Formatter, Lines):
    """``time level service logger message key=value ...``: the same fields, for people."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}" for key, value in vars(record).items() if key not in _STANDARD
        )
        line = (
            f"{_rfc3339(record.created)} {record.levelname} {self.service} {record.name} "
            f"{record.getMessage()}"
        )
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        return line

    def info_line(self, logger: str, message: str, created: float, fields: dict[str, Any]) -> str:
        extras = " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{_rfc3339(created)} INFO {self.service} {logger} {message}"
        return f"{line} {extras}" if extras else line


def formatter(service: str, fmt: LogFormat) -> logging.Formatter:
    return JsonLines(service) if fmt == "json" else TextLines(service)


def trace_fields() -> dict[str, str]:
    """The current span's ids (hex, as trace back-ends show them), or nothing outside a
    traced call or job."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class _InProcessQueueHandler(logging.handlers.QueueHandler):
    """Hands the record over unformatted: the listener thread formats it. (The stdlib handler
    formats in the caller, to make records picklable for other processes; ours stay here.)
    Only the trace ids are added here, in the caller's thread, where its context is."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if tracing.enabled():
            record.__dict__.update(trace_fields())
        return record


_listener: logging.handlers.QueueListener | None = None


def configure_logging(
    service: str, level: str = "INFO", fmt: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Route every record through one queue and listener thread to ``stream`` (stderr), in
    ``fmt``, and have the access log write the same format. Called once per process, at
    start-up (services.common.server.start_up); a second call replaces the first."""
    global _listener
    from services.common.accesslog import ACCESS_LOG  # the access log formats with ours

    stop_logging()
    lines = formatter(service, fmt)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(lines)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, handler)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [_InProcessQueueHandler(records)]
    root.setLevel(level)
    # Python's warnings go through the same lines. (A thread that dies of an exception is
    # left to Python's own "Exception in thread ..." report: tests/e2e look for it.)
    logging.captureWarnings(True)
    # one access line per call at INFO; LOG_LEVEL=WARNING (or above) drops them
    ACCESS_LOG.configure(lines, stream=stream, enabled=root.isEnabledFor(logging.INFO))


@atexit.register
def stop_logging() -> None:
    """Write what is queued and stop the listener (at exit; idempotent)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def record_for(logger: str, message: str, created: float, **fields: Any) -> logging.LogRecord:
    """A LogRecord made outside ``logging.Logger`` (the access log's writer thread)."""
    record = logging.LogRecord(logger, logging.INFO, "", 0, message, None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.__dict__.update(fields)
    return record


def readiness_line(service: str, address: str, fmt: LogFormat) -> str:
    """What a service prints on stdout once it serves (services/launcher.py waits for it):
    ``<service> SERVING on <address>``, or that message as a JSON log object, so a JSON log
    stream stays JSON throughout."""
    message = f"{service} SERVING on {address}"
    if fmt == "text":
        return message
    record = record_for("services.common.server", message, time.time(), address=address)
    return JsonLines(service).format(record)
