"""Where a read's record goes first on an embedded (SQLite file) database: a line appended to
this process's journal file beside the database, then moved into the trail by the linker.

Why: a patient read's record must be stored before its answer leaves. Through a shared SQLite
transaction (the group commit) that cost CalculateDose about a third of its throughput: the
answering thread parks until a batch commits, SQLite has one writer, and every commit makes
the other pooled connections drop their cached pages (docs/benchmarks.md, "Where
CalculateDose's cost lies"). One ``write`` to a file opened for appending costs a few
microseconds and no hand-off. It is as durable as the commit it replaces: the services run
SQLite in WAL mode with ``synchronous=NORMAL``, where a commit is a write to the WAL file
without an fsync; both survive the process dying, neither a power cut in the moment after.

Each process appends to a segment of its own (``reads-<pid>-<id>.jsonl``), one record per line
in its canonical JSON form (services/common/audit/record.py: the bytes its content hash
covers, so the collector hashes the line as read), and holds an exclusive ``flock`` on the
segment while it writes it, for SEGMENT_SECONDS at most. ``collect`` (the keeper's rounds, an
auditor's query) lets go of this process's live segment, then moves every segment nobody holds
(this process's, and any a dead process left) into the database and deletes it, skipping
records already stored (a collector that died between storing and deleting). A line cut short
by a crash belongs to a call that never answered: dropped. A line that cannot be read is
reported and its segment kept aside (``.unreadable``) for an operator. On PostgreSQL, or an
in-memory SQLite, there is no journal: reads' records are group-committed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from services.common.audit.record import AuditRecord, canonical
from services.common.ids import new_id

log = logging.getLogger(__name__)

BATCH = 500
"""Records stored per transaction when a segment is collected."""
SEGMENT_SECONDS = 0.5
"""A segment takes records for this long, then the next record starts a new one: the keeper
(another process) can collect only segments this process has let go of."""
_CONTENT = frozenset(
    f.name for f in fields(AuditRecord) if f.name not in ("sequence", "previous_hash", "hash")
)


@dataclass(frozen=True)
class Collected:
    """One journal line: the record's canonical form (what its content hash covers, so it is
    hashed as read, not rebuilt) and its fields."""

    content: bytes
    fields: dict[str, Any]


def decode(line: bytes) -> Collected:
    """A line ``append`` wrote; ValueError when it is not one."""
    content = line.rstrip(b"\n")
    data = json.loads(content)
    if not isinstance(data, dict) or data.keys() != _CONTENT:
        raise ValueError("not an audit record")
    return Collected(content, data)


def beside(url: str) -> Path | None:
    """The journal directory of a SQLite file database (``<file>.audit-journal``); None for
    any other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(f"{parsed.database}.audit-journal")


class ReadJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()  # the live segment: appends against its replacement
        self._collecting = threading.Lock()  # one collection at a time in this process
        self._fd: int | None = None
        self._started = 0.0  # when the live segment was started (monotonic)

    def _start_segment(self) -> None:
        """Under ``_lock``: a new live segment, locked for as long as it is written."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"reads-{os.getpid()}-{new_id()}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else can hold it
        self._fd = fd
        self._started = time.monotonic()

    def append(self, record: AuditRecord) -> None:
        """Store ``record`` before returning (OSError when the file cannot take it: a full or
        failing disk, which the database on the same disk would meet too)."""
        line = canonical(record) + b"\n"
        with self._lock:
            self._let_go_if_old()
            if self._fd is None:  # calls may come before the trail starts: no segment yet
                self._start_segment()
            assert self._fd is not None
            view = memoryview(line)
            try:
                while view:  # a file takes it whole; a short write goes on where it ended
                    view = view[os.write(self._fd, view) :]
            except OSError:  # a part may be written: let it end the segment, as a torn line
                os.close(self._fd)
                self._fd = None
                raise

    def collect(self, store: Callable[[Sequence[Collected]], int]) -> int:
        """Move every segment nobody is writing into the trail through ``store`` (one
        transaction per call, which must skip records already stored and say how many it
        stored), after letting go of the live segment; how many records were stored."""
        with self._collecting:
            with self._lock:
                if self._fd is not None:
                    os.close(self._fd)  # releases its lock: collected below
                    self._fd = None  # the next record starts a segment
            if not self.directory.is_dir():
                return 0
            return sum(self._collect_segment(path, store) for path in self._segments())

    def let_go(self) -> None:
        """Close the live segment if it has taken records for SEGMENT_SECONDS (a timer of the
        serving process): so a quiet service's last records reach the keeper too."""
        with self._lock:
            self._let_go_if_old()

    def _let_go_if_old(self) -> None:
        """Under ``_lock``: close the live segment once it has taken records for
        SEGMENT_SECONDS (the next collection takes it; the next record starts another)."""
        if self._fd is not None and time.monotonic() - self._started > SEGMENT_SECONDS:
            os.close(self._fd)
            self._fd = None

    def pending(self) -> int:
        """Segments waiting to be collected, live ones included."""
        return len(self._segments()) if self.directory.is_dir() else 0

    def close(self) -> None:
        """Stop writing (the server, after its last call and the linker's last collection).
        A segment still live holds records: it is left for the next collection (a record
        appended after this starts a new segment)."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("reads-*.jsonl"))

    def _collect_segment(self, path: Path, store: Callable[[Sequence[Collected]], int]) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # collected by another process meanwhile
            return 0
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # live: a process is still writing it
                return 0
            if not path.exists():  # another collector finished it while we waited
                return 0
            with os.fdopen(os.dup(fd), "rb") as file:
                count, unreadable = 0, 0
                for batch in _batches(_lines(file, path)):
                    records = [r for r in batch if r is not None]
                    unreadable += len(batch) - len(records)
                    if records:
                        count += store(records)
            if unreadable:
                kept = path.with_suffix(".unreadable")
                path.rename(kept)
                log.error(
                    "audit journal: %d line(s) of %s could not be read; kept as %s",
                    unreadable,
                    path.name,
                    kept.name,
                )
            else:
                path.unlink(missing_ok=True)
            return count
        finally:
            os.close(fd)


def _lines(file: Iterable[bytes], path: Path) -> Iterator[Collected | None]:
    """The segment's records; None for a line that cannot be read. A last line without its
    newline was cut short by a crash before its call answered: dropped."""
    for number, line in enumerate(file, start=1):
        if not line.endswith(b"\n"):
            log.warning("audit journal: %s ends in a partial line (dropped)", path.name)
            return
        try:
            yield decode(line)
        except (ValueError, TypeError):
            log.error("audit journal: %s line %d is not a record", path.name, number)
            yield None


def _batches(records: Iterator[Collected | None]) -> Iterator[list[Collected | None]]:
    batch: list[Collected | None] = []
    for record in records:
        batch.append(record)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
