"""The audit trail's keeper: a process beside each service process that links new records into
the hash chain and collects the read journal (services/common/audit/linker.py and journal.py).

Why a process: grpcio runs a service's Python on one core (the GIL), and keeping the trail is
per-record work of the same order as a cheap audited call's own bookkeeping (parsing, hashing
and inserting each record, then linking it). In a thread of the serving process it took that
core from the calls: CalculateDose on SQLite lost 30 % of its throughput with the trail on, 17 %
with the same work here (docs/benchmarks.md, "The audit trail's keeper"). Here it runs on
whatever core is free, as the database server's work does.

``<SERVICE>_AUDIT_LINKER=process`` (the default) starts one per service process;
``thread`` keeps the linker in the serving process (in-process tests, which start and stop
many servers). The serving process starts it once migrated and stops it after its drain: the
keeper then links what is left and exits, and the service links anything still pending
itself. A keeper that dies is started again; one whose parent died exits. Nothing it does
needs to be exclusive: segments are taken under ``flock``, the chain's head under the
database's lock, so the serving process's own collection (before an auditor's query) and a
second worker's keeper may run beside it.

``python -m services.common.audit.keeper <service>``, with the database URL in
``AUDIT_KEEPER_DATABASE_URL`` (never on the command line, where ``ps`` shows it).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from types import FrameType

from services.common.audit.journal import ReadJournal, beside
from services.common.audit.linker import POLL_SECONDS, ChainLinker
from services.common.audit.store import AuditStore
from services.common.db import Database
from services.common.logs import configure_logging
from services.common.settings import LogFormat

log = logging.getLogger(__name__)

URL_VARIABLE = "AUDIT_KEEPER_DATABASE_URL"
RESTART_SECONDS = 1.0
STOP_SECONDS = 30.0


class AuditKeeper:
    """The serving process's handle on its keeper: start, restart when it dies, stop."""

    def __init__(
        self, service: str, database_url: str, tick: Callable[[], None] = lambda: None
    ) -> None:
        """``tick``: run every POLL_SECONDS in this process while the keeper runs (the read
        journal lets go of a live segment it has written long enough)."""
        self.service = service
        self._url = database_url
        self._tick = tick
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._watcher is not None:
            return
        self._stopping.clear()
        self._spawn()
        self._watcher = threading.Thread(
            target=self._watch, name=f"audit-keeper-{self.service}", daemon=True
        )
        self._watcher.start()

    def _spawn(self) -> None:
        env = {**os.environ, URL_VARIABLE: self._url}
        with self._lock:
            if self._stopping.is_set():  # stop() came between the restart's wait and here
                self._process = None
                return
            self._process = subprocess.Popen(
                [sys.executable, "-m", "services.common.audit.keeper", self.service],
                env=env,
                stdin=subprocess.DEVNULL,
            )

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            try:
                code = process.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                self._tick()
                continue
            if self._stopping.is_set():
                return
            log.warning(
                "audit keeper of %s exited with status %s; starting it again", self.service, code
            )
            if self._stopping.wait(RESTART_SECONDS):
                return
            self._spawn()

    def stop(self) -> None:
        """Ask the keeper to link what is left and exit; wait for it (killed after
        STOP_SECONDS)."""
        self._stopping.set()
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("audit keeper of %s did not stop; killed", self.service)
                process.kill()
                process.wait()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(timeout=STOP_SECONDS)


def run(service: str, url: str) -> int:
    """The keeper's loop: a linker round every POLL_SECONDS until SIGTERM or SIGINT, or
    until the process that started it is gone; then one last round."""
    module = importlib.import_module(f"services.{service}.store.models")
    db = Database(url, pool_size=2)
    journal = beside(url)
    linker = ChainLinker(
        db,
        AuditStore(service, module.audit_tables),
        ReadJournal(journal) if journal is not None else None,
    )
    stop = threading.Event()

    def stopping(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    parent = os.getppid()
    while not stop.wait(POLL_SECONDS) and os.getppid() == parent:
        try:
            linker.link_all()
        except Exception as error:  # noqa: BLE001  # the next round tries again
            log.warning("audit keeper: %s; retrying", type(error).__name__)
    try:
        linker.link_all()
    except Exception as error:  # noqa: BLE001  # the service links what is left
        log.warning("audit keeper: records left pending at stop: %s", type(error).__name__)
    db.dispose()
    return 0


def main(argv: list[str]) -> int:
    from services.common.audit.__main__ import SERVICES  # the trail's commands: the same three

    url = os.environ.get(URL_VARIABLE, "")
    if len(argv) != 1 or argv[0] not in SERVICES or not url:
        print(
            f"usage: {URL_VARIABLE}=<url> python -m services.common.audit.keeper "
            "scheduler|inventory|notify",
            file=sys.stderr,
        )
        return 2
    fmt: LogFormat = "json" if os.environ.get("LOG_FORMAT") == "json" else "text"
    configure_logging(f"{argv[0]}-audit-keeper", os.environ.get("LOG_LEVEL", "INFO"), fmt)
    return run(argv[0], url)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
