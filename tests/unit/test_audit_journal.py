"""The read journal (services/common/audit/journal.py) and the keeper process that collects it
(services/common/audit/keeper.py), on a SQLite file: reads' records reach the chain once and
intact, whatever crashed where."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from services.common import errors
from services.common.audit import journal as journal_module
from services.common.audit.journal import beside
from services.common.audit.record import PATIENT_READ, AuditRecord, canonical, content_hash
from services.common.audit.store import AuditStore
from services.common.audit.trail import AuditTrail
from services.common.audit.verify import verify
from services.common.clock import SystemClock
from services.common.db import Database
from services.common.migrations import upgrade
from services.scheduler.store.models import audit_tables
from tests.unit.test_audit import record


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[AuditTrail]:
    db = Database(f"sqlite:///{tmp_path}/scheduler.db")
    upgrade("scheduler", db.engine)
    yield AuditTrail("scheduler", db, AuditStore("scheduler", audit_tables), SystemClock())
    db.dispose()


def read(n: int) -> AuditRecord:
    return record(n, kind=PATIENT_READ, method="/infusion.scheduler.v1.SchedulerService/GetPatient")


def stored(trail: AuditTrail) -> dict[str, str]:
    """Linked records: id -> stored content hash."""
    with trail.db.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT e.id, e.content_hash FROM scheduler_audit_events e "
                "JOIN scheduler_audit_chain c ON c.event_id = e.id"
            )
        )
        return {row.id: row.content_hash for row in rows}


def chain_intact(trail: AuditTrail) -> bool:
    with trail.db.engine.connect() as connection:
        return verify(trail.store.walk(connection)).intact


def segments(trail: AuditTrail) -> list[str]:
    assert trail.journal is not None
    return sorted(p.name for p in trail.journal.directory.iterdir())


def test_only_a_sqlite_file_keeps_a_journal_beside_it(tmp_path: Path) -> None:
    assert beside(f"sqlite:///{tmp_path}/a.db") == Path(f"{tmp_path}/a.db.audit-journal")
    assert beside("sqlite://") is None
    assert beside("sqlite:///:memory:") is None
    assert beside("postgresql+psycopg2://u@h/db") is None


def test_a_read_is_in_the_journal_when_store_now_returns_and_in_the_chain_after_collection(
    trail: AuditTrail,
) -> None:
    records = [read(n) for n in range(3)]
    for r in records:
        trail.store_now(r.raw())
    assert stored(trail) == {}  # not in the database yet: in the journal
    (live,) = segments(trail)
    assert live.startswith(f"reads-{os.getpid()}-") and live.endswith(".jsonl")
    assert trail.linker.link_all() == 3
    # hashed from the line as read: the same content hash the record itself gives
    assert stored(trail) == {r.id: content_hash(r) for r in records}
    assert chain_intact(trail)
    assert segments(trail) == []  # collected segments are deleted
    trail.store_now(read(3).raw())  # a new segment for what follows
    assert trail.linker.link_all() == 1 and len(stored(trail)) == 4


def test_a_segment_another_process_holds_is_left_alone(trail: AuditTrail) -> None:
    assert trail.journal is not None
    directory = trail.journal.directory
    directory.mkdir()
    other = directory / "reads-999999-x.jsonl"
    other.write_bytes(json.dumps(read(1).raw()).encode() + b"\n")
    fd = os.open(other, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as its live writer holds it
        assert trail.linker.link_all() == 0 and other.exists()
    finally:
        os.close(fd)  # its writer died or let go: now it is collected
    assert trail.linker.link_all() == 1 and not other.exists()


def test_the_keeper_cleans_what_the_answering_thread_wrote_as_it_came(
    trail: AuditTrail,
) -> None:
    """The answering thread writes a record's fields cut but not cleaned (a refused request's
    id may hold anything); what is stored is the cleaned record, hashed as such."""
    raw = (
        read(1)
        .raw()
        ._replace(
            request_id="req\x00 1\n",
            patient_ids=["p2", "p1", "p2", ""],
            roles=["b", "a"],
            subject="user-\ud800é",  # a lone surrogate: a token's claim can hold one
        )
    )
    trail.store_now(raw)
    assert trail.linker.link_all() == 1
    cleaned = raw.cleaned()
    assert (cleaned.request_id, cleaned.patient_ids, cleaned.roles, cleaned.subject) == (
        "req??1?",
        ("p1", "p2"),
        ("a", "b"),
        "user-?é",
    )
    assert stored(trail) == {cleaned.id: content_hash(cleaned)}


def test_a_line_an_earlier_version_wrote_is_collected_as_the_same_record(
    trail: AuditTrail,
) -> None:
    """Segments written before an upgrade hold each record's canonical JSON object: they are
    collected into the same records (the same content hash), not left behind."""
    assert trail.journal is not None
    trail.journal.directory.mkdir()
    earlier = [read(n) for n in range(2)]
    (trail.journal.directory / "reads-999999-old.jsonl").write_bytes(
        b"".join(canonical(r) + b"\n" for r in earlier)
    )
    assert trail.linker.link_all() == 2
    assert stored(trail) == {r.id: content_hash(r) for r in earlier}


def test_a_segment_collected_twice_stores_each_record_once(trail: AuditTrail) -> None:
    """A collector that died between its commit and deleting the segment: the next one reads
    it again and skips what is stored."""
    assert trail.journal is not None
    for n in range(3):
        trail.store_now(read(n).raw())
    (name,) = segments(trail)
    copy = trail.journal.directory.parent / "copy"
    shutil.copy(trail.journal.directory / name, copy)
    assert trail.linker.link_all() == 3
    shutil.copy(copy, trail.journal.directory / name)
    assert trail.linker.link_all() == 0
    assert len(stored(trail)) == 3 and chain_intact(trail)


def test_a_torn_last_line_is_dropped_and_an_unreadable_line_keeps_its_segment_aside(
    trail: AuditTrail,
) -> None:
    assert trail.journal is not None
    for n in range(2):
        trail.store_now(read(n).raw())
    (name,) = segments(trail)
    path = trail.journal.directory / name
    trail.journal.close()
    with path.open("ab") as file:  # a crash in the middle of a write: no newline
        file.write(b'{"caller_kind":"us')
    assert trail.linker.link_all() == 2 and segments(trail) == []
    trail.store_now(read(2).raw())
    (name,) = segments(trail)
    trail.journal.close()
    path = trail.journal.directory / name
    with path.open("ab") as file:
        file.write(b"not a record\n")
    trail.store_now(read(3).raw())  # a new segment
    assert trail.linker.link_all() == 2  # records 2 and 3: the readable lines are kept
    assert segments(trail) == [path.with_suffix(".unreadable").name]


def test_a_disk_that_cannot_take_the_record_answers_unavailable(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment's blocks are reserved when it starts: a full disk is a refused call then,
    never a fault on a page of the mapping later."""

    def full(_fd: int, _offset: int, _length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    assert trail.journal is not None
    trail.store_now(read(0).raw())
    (first,) = segments(trail)
    monkeypatch.setattr(journal_module, "SEGMENT_SECONDS", 0.0)  # the next needs a segment
    allocate = os.posix_fallocate
    monkeypatch.setattr("services.common.audit.journal.os.posix_fallocate", full)
    with pytest.raises(errors.Unavailable):
        trail.store_now(read(1).raw())
    assert segments(trail) == [first]  # the segment it could not reserve is not left behind
    monkeypatch.setattr("services.common.audit.journal.os.posix_fallocate", allocate)
    trail.store_now(read(2).raw())
    assert len(segments(trail)) == 2 and first in segments(trail)
    assert trail.linker.link_all() == 2 and set(stored(trail)) == {read(0).id, read(2).id}


def test_a_segment_its_writer_left_uncut_reads_as_the_lines_it_holds(trail: AuditTrail) -> None:
    """A process that died with its segment live leaves it at full size: the space it never
    used reads as nothing, and a line it was copying (a zero byte inside) is dropped."""
    assert trail.journal is not None
    trail.store_now(read(0).raw())
    trail.store_now(read(1).raw())
    (name,) = segments(trail)
    path = trail.journal.directory / name
    assert path.stat().st_size == journal_module.SEGMENT_BYTES  # live: not yet cut
    held = path.read_bytes()
    trail.journal.close()
    assert path.stat().st_size < 2000  # let go: cut to its lines
    whole = held.rstrip(b"\0")
    torn = json.dumps(read(2).raw()).encode()
    path.write_bytes(whole + torn[:40] + b"\0" * 10 + torn[50:] + b"\n" + b"\0" * 4096)
    assert trail.linker.link_all() == 2 and set(stored(trail)) == {read(0).id, read(1).id}
    assert segments(trail) == []


def test_a_record_larger_than_a_segment_gets_one_of_its_own(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 1000)
    big = read(0).raw()._replace(patient_ids=[f"patient-{n:05}" for n in range(200)])
    trail.store_now(read(1).raw())
    trail.store_now(big)  # does not fit after the first: a new segment, larger than usual
    trail.store_now(read(2).raw())
    assert len(segments(trail)) == 3
    assert trail.linker.link_all() == 3 and chain_intact(trail)


def test_the_live_segment_is_let_go_once_old_enough(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert trail.journal is not None
    trail.store_now(read(1).raw())
    (live,) = segments(trail)
    trail.journal.let_go()  # young: kept
    assert trail.journal._fd is not None
    monkeypatch.setattr(journal_module, "SEGMENT_SECONDS", 0.0)
    trail.journal.let_go()
    assert trail.journal._fd is None and segments(trail) == [live]  # left for a collector
    trail.store_now(read(2).raw())
    assert len(segments(trail)) == 2


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_keeper_process_collects_and_links_is_restarted_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/scheduler.db"
    db = Database(url)
    upgrade("scheduler", db.engine)
    trail = AuditTrail(
        "scheduler", db, AuditStore("scheduler", audit_tables), SystemClock(), "process"
    )
    monkeypatch.setattr(journal_module, "SEGMENT_SECONDS", 0.0)  # let go at the next tick
    assert trail.keeper is not None
    trail.start()
    try:
        trail.store_now(read(1).raw())
        wait_for(lambda: len(stored(trail)) == 1)  # the keeper's round, not this process's
        process = trail.keeper._process
        assert process is not None
        process.kill()
        process.wait()
        trail.store_now(read(2).raw())
        wait_for(lambda: len(stored(trail)) == 2)  # a new keeper took over
        assert trail.keeper._process is not process
    finally:
        trail.stop()
    assert trail.keeper._process is None
    assert chain_intact(trail) and segments(trail) == []
    db.dispose()
