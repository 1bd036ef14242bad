"""What links a service's new audit records into its hash chain: the keeper process beside
the service (services/common/audit/keeper.py) runs it, or a thread of the service does.

Records are stored where they are made (a mutation's transaction, a read's group commit or,
on a SQLite file, the read journal it collects first: services/common/audit/journal.py)
without touching the chain, so no call waits on the chain's lock. The linker appends them in
batches, one short transaction each, every POLL_SECONDS (sooner when a full batch is waiting):
linking each commit's records at once would cost a busy service a second write transaction per
commit, and on SQLite make its calls queue behind the linker for the write lock. At stop it
links what is still pending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from services.common.audit.journal import ReadJournal
from services.common.audit.record import AuditRecord
from services.common.audit.store import AuditStore
from services.common.db import Database

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
BATCH = 500


class ChainLinker:
    def __init__(self, db: Database, store: AuditStore, journal: ReadJournal | None = None) -> None:
        self._db = db
        self._store = store
        self._journal = journal
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._immediate = db.engine.execution_options(sqlite_immediate=True)
        self._stored = 0  # records stored since the last round (a hint, not a count)

    def stored(self, count: int) -> None:
        """``count`` records were committed: wake early once a batch is waiting (only a
        linker thread of this process is woken: a keeper keeps its own time)."""
        if self._thread is None:
            return
        self._stored += count
        if self._stored >= BATCH:
            self._wake.set()

    def collect(self) -> int:
        """Store and link the read journal's records (if the trail keeps one); how many."""
        if self._journal is None:
            return 0
        return self._journal.collect(self._store_collected)

    def _store_collected(self, records: Sequence[AuditRecord]) -> int:
        with self._immediate.begin() as connection:
            return self._store.link_collected(connection, records)

    def link_all(self) -> int:
        """Collect the read journal, then link every pending record now; how many were
        linked."""
        total = self.collect()
        while True:
            with self._immediate.begin() as connection:
                linked = self._store.link_pending(connection, BATCH)
            total += linked
            if linked < BATCH:
                return total

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"audit-linker-{self._store.service}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (if it runs here), then link what is left (best effort: a record
        not linked now is linked by the next start, or by another replica)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join(timeout=30)
        try:
            self.link_all()
        except Exception as error:  # noqa: BLE001  # the database may be gone at shutdown
            log.warning("audit linker: records left pending at stop: %s", type(error).__name__)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            self._stored = 0
            try:
                self.link_all()
            except Exception as error:  # noqa: BLE001  # retried at the next round
                log.warning("audit linker: %s; retrying", type(error).__name__)
                self._stopping.wait(POLL_SECONDS)
