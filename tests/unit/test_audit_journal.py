"""The read journal (services/common/audit/journal.py) and the keeper process that collects it
(services/common/audit/keeper.py), on a SQLite file: reads' records reach the chain once and
intact, whatever crashed where."""

from __future__ import annotations

import errno
import fcntl
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
        trail.store_now(r)
    assert stored(trail) == {}  # not in the database yet: in the journal
    (live,) = segments(trail)
    assert live.startswith(f"reads-{os.getpid()}-") and live.endswith(".jsonl")
    assert trail.linker.link_all() == 3
    # hashed from the line as read: the same content hash the record itself gives
    assert stored(trail) == {r.id: content_hash(r) for r in records}
    assert chain_intact(trail)
    assert segments(trail) == []  # collected segments are deleted
    trail.store_now(read(3))  # a new segment for what follows
    assert trail.linker.link_all() == 1 and len(stored(trail)) == 4


def test_a_segment_another_process_holds_is_left_alone(trail: AuditTrail) -> None:
    assert trail.journal is not None
    directory = trail.journal.directory
    directory.mkdir()
    other = directory / "reads-999999-x.jsonl"
    other.write_bytes(canonical(read(1)) + b"\n")
    fd = os.open(other, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as its live writer holds it
        assert trail.linker.link_all() == 0 and other.exists()
    finally:
        os.close(fd)  # its writer died or let go: now it is collected
    assert trail.linker.link_all() == 1 and not other.exists()


def test_a_segment_collected_twice_stores_each_record_once(trail: AuditTrail) -> None:
    """A collector that died between its commit and deleting the segment: the next one reads
    it again and skips what is stored."""
    assert trail.journal is not None
    for n in range(3):
        trail.store_now(read(n))
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
        trail.store_now(read(n))
    (name,) = segments(trail)
    path = trail.journal.directory / name
    trail.journal.close()
    with path.open("ab") as file:  # a crash in the middle of a write: no newline
        file.write(b'{"caller_kind":"us')
    assert trail.linker.link_all() == 2 and segments(trail) == []
    trail.store_now(read(2))
    (name,) = segments(trail)
    trail.journal.close()
    path = trail.journal.directory / name
    with path.open("ab") as file:
        file.write(b"not a record\n")
    trail.store_now(read(3))  # a new segment
    assert trail.linker.link_all() == 2  # records 2 and 3: the readable lines are kept
    assert segments(trail) == [path.with_suffix(".unreadable").name]


def test_a_disk_that_cannot_take_the_record_answers_unavailable(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_fd: int, _data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    trail.store_now(read(0))
    (first,) = segments(trail)
    write = os.write
    monkeypatch.setattr("services.common.audit.journal.os.write", full)
    with pytest.raises(errors.Unavailable):
        trail.store_now(read(1))
    monkeypatch.setattr("services.common.audit.journal.os.write", write)
    # the failed write ended its segment (a part of it there would read as a torn last
    # line); the next record starts another
    trail.store_now(read(2))
    assert len(segments(trail)) == 2 and first in segments(trail)
    assert trail.linker.link_all() == 2 and set(stored(trail)) == {read(0).id, read(2).id}


def test_the_live_segment_is_let_go_once_old_enough(
    trail: AuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert trail.journal is not None
    trail.store_now(read(1))
    (live,) = segments(trail)
    trail.journal.let_go()  # young: kept
    assert trail.journal._fd is not None
    monkeypatch.setattr(journal_module, "SEGMENT_SECONDS", 0.0)
    trail.journal.let_go()
    assert trail.journal._fd is None and segments(trail) == [live]  # left for a collector
    trail.store_now(read(2))
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
        trail.store_now(read(1))
        wait_for(lambda: len(stored(trail)) == 1)  # the keeper's round, not this process's
        process = trail.keeper._process
        assert process is not None
        process.kill()
        process.wait()
        trail.store_now(read(2))
        wait_for(lambda: len(stored(trail)) == 2)  # a new keeper took over
        assert trail.keeper._process is not process
    finally:
        trail.stop()
    assert trail.keeper._process is None
    assert chain_intact(trail) and segments(trail) == []
    db.dispose()
