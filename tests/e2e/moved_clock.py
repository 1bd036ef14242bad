"""A service process whose clock the test moves forward: ``python -m tests.e2e.moved_clock
<service>`` serves ``services.<service>`` exactly as ``python -m services.<service>`` does
(the same settings, database, token issuer and TLS), built with an :class:`OffsetFileClock`
instead of the system clock. For end-to-end runs that need weeks to pass between chair visits
(a visit is checked in, started and completed only on its local day, docs/scheduling.md): the
test writes how far ahead of the real time the services' "now" is, and every process reading
the same file agrees on it. Time keeps flowing between moves, so jobs and relays run as they
do on the real clock.

Only tests start services this way; the services themselves take no such setting."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

from services.common.server import serve

OFFSET_FILE = "E2E_CLOCK_OFFSET_FILE"  # the environment variable naming the file


class OffsetFileClock:
    """The real time plus the seconds written in ``path`` (0 while the file is missing). The
    file is re-read when it changes (a move replaces it), so a move reaches every
    process at its next reading of the clock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        try:
            stat = self.path.stat()
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if key != self._seen:
                self._offset = dt.timedelta(seconds=float(self.path.read_text()))
                self._seen = key
        except FileNotFoundError:
            self._offset = dt.timedelta(0)
        return dt.datetime.now(dt.UTC) + self._offset


def move_clock(path: Path, to: dt.datetime) -> None:
    """Set the services' "now" to the instant ``to`` (aware); atomically, so a process never
    reads half a number. Forward only: a clock that runs back is not what the services face."""
    offset = (to - dt.datetime.now(dt.UTC)).total_seconds()
    if path.exists():
        assert offset >= float(path.read_text()), f"the clock moves forward only, not to {to}"
    handle, temporary = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(repr(offset))
    os.replace(temporary, path)


def main(service: str) -> int:
    clock = OffsetFileClock(Path(os.environ[OFFSET_FILE]))
    if service == "scheduler":
        from services.scheduler.__main__ import build as build_scheduler
        from services.scheduler.settings import load_settings as scheduler_settings

        return serve(scheduler_settings, lambda s: build_scheduler(s, clock))
    if service == "inventory":
        from services.inventory.__main__ import build as build_inventory
        from services.inventory.settings import load_settings as inventory_settings

        return serve(inventory_settings, lambda s: build_inventory(s, clock))
    if service == "notify":
        from services.notify.__main__ import build as build_notify
        from services.notify.settings import load_settings as notify_settings

        return serve(notify_settings, lambda s: build_notify(s, clock))
    print(f"usage: python -m tests.e2e.moved_clock scheduler|inventory|notify ({service}?)")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
