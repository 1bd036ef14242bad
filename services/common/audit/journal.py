"""Where a read's record goes first on an embedded (SQLite file) database: a line appended to
this process's journal file beside the database, then moved into the trail by the linker.

Why: a patient read's record must be stored before its answer leaves. Through a shared SQLite
transaction (the group commit) that cost CalculateDose about a third of its throughput: the
answering thread parks until a batch commits, SQLite has one writer, and every commit makes
the other pooled connections drop their cached pages (docs/benchmarks.md, "Where
CalculateDose's cost lies"). A line copied into a file's shared memory mapping is in the
kernel's page cache once copied, as a ``write`` would leave it, and costs neither a system
call nor the hand-over of the GIL that each ``write`` brings a busy service (with ``write``
and a lock around it CalculateDose lost 19-22 % to the trail, with the mapping 16 %:
docs/benchmarks.md, "The read journal's line"). It is as durable as the commit it replaces:
the services run SQLite in WAL mode with ``synchronous=NORMAL``, where a commit is a write to
the WAL file without an fsync; both survive the process dying, neither a power cut in the
moment after.

Each process appends to a segment of its own (``reads-<pid>-<id>.jsonl``), one record per
line: its RawRecord as a JSON array (services/common/audit/record.py), the fields as the call
gathered them, which the collector cleans, hashes and stores (the answering thread does the
least that keeps the record whole). A segment is SEGMENT_BYTES with its blocks reserved when
it starts (a full disk refuses the call then, rather than faulting on a page of the mapping
later); its writer holds an exclusive ``flock`` on it for SEGMENT_SECONDS at most, or until it
is full, then cuts it to its lines and lets go. ``collect`` (the keeper's rounds, an auditor's
query) lets go of this process's live segment, then moves every segment nobody holds (this
process's, and any a dead process left, whose unused space reads as nothing) into the
database and deletes it, skipping records already stored (a collector that died between
storing and deleting). A line cut short by a crash belongs to a call that never answered:
dropped. A line that cannot be read is reported and its segment kept aside (``.unreadable``)
for an operator. On PostgreSQL, or an in-memory SQLite, there is no journal: reads' records
are group-committed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path

import orjson
from sqlalchemy.engine import make_url

from services.common.audit.record import AuditRecord, RawRecord, raw_from
from services.common.ids import new_id

log = logging.getLogger(__name__)

BATCH = 500
"""Records stored per transaction when a segment is collected."""
SEGMENT_BYTES = 1 << 20
"""A segment's size: half a second of a busy service's reads (about 500 bytes a record); a
full segment is let go and the next record starts another."""
SEGMENT_SECONDS = 0.5
"""A segment takes records for this long, then the next record starts a new one: the keeper
(another process) can collect only segments this process has let go of."""
_CANONICAL = frozenset(
    f.name for f in fields(AuditRecord) if f.name not in ("sequence", "previous_hash", "hash")
)


def decode(line: bytes) -> AuditRecord:
    """The record of a line ``append`` wrote, cleaned (ValueError or TypeError when it is not
    one). A line written before the journal held RawRecords (a record's canonical JSON
    object) is read too, so an upgrade leaves no segment behind."""
    data = json.loads(line)
    if isinstance(data, dict):
        if data.keys() != _CANONICAL:
            raise ValueError("not an audit record")
        return raw_from([data[name] for name in RawRecord._fields]).cleaned()
    return raw_from(data).cleaned()


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
        self._fd: int | None = None  # the live segment, locked (flock) while it is written
        self._map: mmap.mmap | None = None  # ... and mapped
        self._used = 0  # bytes of the mapping written
        self._started = 0.0  # when the live segment was started (monotonic)

    def _start_segment(self, at_least: int) -> None:
        """Under ``_lock``: a new live segment of SEGMENT_BYTES (or ``at_least``), its blocks
        reserved at once: a disk that cannot take them fails here, as an OSError, never later
        as a fault on a page of the mapping."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"reads-{os.getpid()}-{new_id()}.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: nobody else can hold it
            size = max(SEGMENT_BYTES, at_least)
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd = fd
        self._used = 0
        self._started = time.monotonic()

    def _end_segment(self) -> None:
        """Under ``_lock``: stop writing the live segment and let go of it, cut to what it
        holds (a segment left uncut, by a crash, ends in zeros that read as nothing)."""
        fd, mapping = self._fd, self._map
        self._fd, self._map = None, None
        try:
            if mapping is not None:
                mapping.close()
            if fd is not None:
                os.ftruncate(fd, self._used)
        except OSError as error:
            log.warning("audit journal: a segment was left uncut: %s", error)
        finally:
            if fd is not None:
                os.close(fd)  # releases its lock: the next collection takes it

    def append(self, record: RawRecord) -> None:
        """Store ``record`` before returning (OSError when the disk cannot take a new segment:
        full or failing, as the database on the same disk would find it). The line is
        copied into the live segment's mapping: in the kernel's page cache once copied, as a
        ``write`` would leave it, without the system call and the hand-over of the GIL that
        each ``write`` costs a busy service."""
        try:
            line = orjson.dumps(tuple(record)) + b"\n"
        except orjson.JSONEncodeError:  # a lone surrogate (from a token's claim): escaped
            line = json.dumps(record).encode() + b"\n"
        with self._lock:
            self._let_go_if_old()
            if self._map is not None and self._used + len(line) > len(self._map):
                self._end_segment()
            if self._map is None:  # calls may come before the trail starts: no segment yet
                self._start_segment(len(line))
            assert self._map is not None
            end = self._used + len(line)
            self._map[self._used : end] = line
            self._used = end

    def collect(self, store: Callable[[Sequence[AuditRecord]], int]) -> int:
        """Move every segment nobody is writing into the trail through ``store`` (one
        transaction per call, which must skip records already stored and say how many it
        stored), after letting go of the live segment; how many records were stored."""
        with self._collecting:
            with self._lock:
                self._end_segment()  # collected below; the next record starts a segment
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
            self._end_segment()

    def pending(self) -> int:
        """Segments waiting to be collected, live ones included."""
        return len(self._segments()) if self.directory.is_dir() else 0

    def close(self) -> None:
        """Stop writing (the server, after its last call and the linker's last collection).
        A segment still live holds records: it is left for the next collection (a record
        appended after this starts a new segment)."""
        with self._lock:
            self._end_segment()

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("reads-*.jsonl"))

    def _collect_segment(self, path: Path, store: Callable[[Sequence[AuditRecord]], int]) -> int:
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
                data = file.read()
            count, unreadable = 0, 0
            for batch in _batches(_lines(data, path)):
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


def _lines(data: bytes, path: Path) -> Iterator[AuditRecord | None]:
    """The segment's records; None for a line that cannot be read. The zeros after the last
    line are space its writer never used. A line cut short (no newline, or holding a zero
    byte: a JSON line holds none) was being copied when its writer died, before its call
    answered: dropped."""
    lines = data.rstrip(b"\0").split(b"\n")
    torn = lines.pop()  # empty when the last line is whole
    for number, line in enumerate(lines, start=1):
        if b"\0" in line:
            log.warning("audit journal: %s line %d was cut short (dropped)", path.name, number)
            continue
        try:
            yield decode(line)
        except (ValueError, TypeError):
            log.error("audit journal: %s line %d is not a record", path.name, number)
            yield None
    if torn:
        log.warning("audit journal: %s ends in a partial line (dropped)", path.name)


def _batches(records: Iterator[AuditRecord | None]) -> Iterator[list[AuditRecord | None]]:
    batch: list[AuditRecord | None] = []
    for record in records:
        batch.append(record)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
