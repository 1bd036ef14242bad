"""`python -m demo.run` (what `make run` runs) as a test starts it: in a session of its own
(so a test can send SIGINT to its process group as a terminal's Ctrl-C does), on free ports,
with SQLite in a temporary directory, and its output collected by a reader thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from services.issuer.local import LocalIssuer
from services.launcher import SERVICES, free_port

READY = "Ctrl-C stops them."


@dataclass
class Launcher:
    proc: subprocess.Popen[str]
    addresses: dict[str, str]
    env: dict[str, str]  # what it was started with (its issuer's ISSUER_DIR too)
    lines: list[str] = field(default_factory=list)
    _reading: bool = True
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 180) -> None:
        """Until a line contains ``text``; AssertionError with the output if the launcher
        exits first or the time runs out."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reading):
                    raise AssertionError(f"no {text!r} from make run:\n{self.output_tail()}")
                self._changed.wait(min(left, 0.5))

    def output_tail(self, lines: int = 60) -> str:
        return "\n".join(self.lines[-lines:])

    def interrupt(self) -> None:
        """What Ctrl-C in a terminal does: SIGINT to every process of the foreground group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._reading = False
            self._changed.notify_all()


def run_environment(var: Path, ports: Mapping[str, int] | None = None) -> dict[str, str]:
    """Free ports (or ``ports``) and SQLite under ``var`` for each service, and a development
    issuer of the run's own there (``ISSUER_DIR``, ``ISSUER_LISTEN``), whose settings the
    services get too (for tests that start them without the launcher)."""
    env = dict(os.environ)
    env["ISSUER_DIR"] = str(var / "issuer")
    env["ISSUER_LISTEN"] = f"127.0.0.1:{free_port()}"
    env.update(LocalIssuer(var / "issuer", env["ISSUER_LISTEN"]).service_environment())
    for name in SERVICES:
        prefix = name.upper()
        port = (ports or {}).get(name) or free_port()
        env[f"{prefix}_LISTEN"] = f"127.0.0.1:{port}"
        env.pop(f"{prefix}_ADDRESS", None)  # the launcher sets these from the listen addresses
        env[f"{prefix}_DATABASE_URL"] = f"sqlite:///{var / name}.db"
        env[f"{prefix}_SHUTDOWN_GRACE_SECONDS"] = "1"
    env["CONSOLE_LISTEN"] = f"127.0.0.1:{free_port()}"  # the staff console make run starts too
    return env


def start(env: Mapping[str, str]) -> Launcher:
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.run"],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    addresses = {name: env[f"{name.upper()}_LISTEN"] for name in SERVICES}
    launcher = Launcher(proc, addresses, dict(env))
    threading.Thread(target=launcher._read, daemon=True).start()
    return launcher


@contextmanager
def make_run(var: Path) -> Iterator[Launcher]:
    """Started and past its banner; stopped (SIGTERM, then the whole group killed) after."""
    launcher = start(run_environment(var))
    try:
        launcher.wait_for(READY)
        yield launcher
    finally:
        stop(launcher)


def stop(launcher: Launcher, timeout: float = 30) -> None:
    if launcher.proc.poll() is None:
        launcher.proc.send_signal(signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        launcher.proc.wait(timeout=timeout)
    with suppress(ProcessLookupError):  # anything left of its group (a child that would not
        os.killpg(launcher.proc.pid, signal.SIGKILL)  # stop) goes too
    launcher.proc.wait()
