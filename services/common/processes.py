"""Several processes serving one service's port (``<SERVICE>_PROCESSES`` above 1).

grpcio serves Python handlers on one core (the GIL), so a service that needs more CPU runs
more processes. The process started (the parent) binds the listen address itself with
SO_REUSEPORT (so port 0 becomes one fixed port, and no other program can take the port while
workers come and go), then starts ``processes`` workers: each is ``python -m
services.<name>`` with ``<SERVICE>_PROCESSES=1``, ``<SERVICE>_REUSE_PORT=true`` and the
resolved address, a whole service of its own (its gRPC server, pool, jobs, relays). The kernel
spreads new connections over the workers' listening sockets; one HTTP/2 connection stays with
the worker that accepted it, so a client that wants several workers opens several connections.

Order: worker 1 starts alone and applies the migrations; once it says it is SERVING the others
start (no two processes migrate at once), and once all say so the parent prints the service's
own ``<name> SERVING on <address>`` line (what services/launcher.py waits for). A worker's other
output passes through. SIGTERM or SIGINT to the parent goes to every worker (each drains as a
single process does); a worker that exits makes the parent stop the others and exit with status
1, so a supervisor (the launcher, Kubernetes) sees one service that failed.

Each worker has its own health and metrics: ``<SERVICE>_HEALTH_LISTEN`` and
``<SERVICE>_METRICS_LISTEN`` with port P give worker i (from 0) port P + i (port 0: each any
free port). Health on the shared port answers for whichever worker took the connection.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from services.common.logs import readiness_line
from services.common.settings import ServiceSettings
from services.common.signals import SignalWaiter

STOP_SECONDS = 30.0  # beyond the shutdown grace: then a worker is killed


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve(address: str) -> tuple[socket.socket, str]:
    """A socket bound (not listening) to ``address`` with SO_REUSEPORT, and the address with
    its port resolved: the workers bind the same port with SO_REUSEPORT too."""
    host, port = _split(address)
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(sockaddr)
    return sock, _join(host, sock.getsockname()[1])


def worker_environment(
    settings: ServiceSettings, address: str, index: int, base: dict[str, str]
) -> dict[str, str]:
    """Worker ``index``'s environment: one process, sharing ``address``, its own health and
    metrics ports."""
    env = dict(base)
    env[settings.variable("processes")] = "1"
    env[settings.variable("reuse_port")] = "true"
    env[settings.variable("listen")] = address
    for field in ("health_listen", "metrics_listen"):
        value = getattr(settings, field)
        if value:
            host, port = _split(value)
            env[settings.variable(field)] = _join(host, port + index if port else 0)
    return env


class Workers:
    def __init__(self, settings: ServiceSettings, address: str) -> None:
        self.settings = settings
        self.address = address
        self.procs: list[subprocess.Popen[str]] = []
        self._serving = 0
        self._changed = threading.Condition()
        self.waiter: SignalWaiter | None = None

    def start_one(self, index: int) -> None:
        env = worker_environment(self.settings, self.address, index, dict(os.environ))
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.settings.service}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self.procs.append(proc)
        threading.Thread(
            target=self._relay, args=(proc.stdout,), name=f"worker-{index}", daemon=True
        ).start()

    def _relay(self, stream: IO[str] | None) -> None:
        from services.launcher import SERVING_LINE, _message

        assert stream is not None
        for raw in stream:
            said = SERVING_LINE.match(_message(raw.rstrip("\n")))
            if said and said.group(1) == self.settings.service:
                with self._changed:
                    self._serving += 1
                    self._changed.notify_all()
                continue  # the parent says it once, for all of them
            sys.stdout.write(raw)
            sys.stdout.flush()
        with self._changed:
            self._changed.notify_all()
        if self.waiter is not None:
            self.waiter.wake()

    def wait_serving(self, count: int, signals: SignalWaiter) -> bool:
        """True once ``count`` workers said they serve; False on a signal or a worker's exit."""
        with self._changed:
            while self._serving < count:
                if signals.received is not None or self.exited():
                    return False
                self._changed.wait(0.2)
        return True

    def exited(self) -> list[int]:
        return [code for p in self.procs if (code := p.poll()) is not None]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + STOP_SECONDS
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_workers(settings: ServiceSettings) -> int:
    """The parent of ``settings.processes`` workers, until a stop signal or a worker's exit."""
    held, address = reserve(settings.listen)
    workers = Workers(settings, address)
    status = 0
    with held, SignalWaiter() as signals:
        workers.waiter = signals
        try:
            workers.start_one(0)  # alone: it applies the migrations
            ready = workers.wait_serving(1, signals)
            if ready:
                for index in range(1, settings.processes):
                    workers.start_one(index)
                ready = workers.wait_serving(settings.processes, signals)
            if ready:
                line = readiness_line(settings.service, address, settings.log_format)
                sys.stdout.write(f"{line}\n")
                sys.stdout.flush()
                while signals.received is None and not workers.exited():
                    signals.wait(1.0)
            if workers.exited() and signals.received is None:
                print(
                    f"{settings.service}: a worker exited (status {workers.exited()[0]}); "
                    "stopping the others",
                    file=sys.stderr,
                )
                status = 1
        finally:
            workers.stop()
    return status
