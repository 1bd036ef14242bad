"""Starting the three services as child processes (`make run`, `make demo`) and knowing that
what serves on each port is the child started, not whoever else answers there.

Two checks. Before anything starts, each listen address must be free: a port held by another
process (another `make run`, a stray service) is refused at once with the variable to change.
Then each child must itself say it is serving: the service prints ``<name> SERVING on
<address>`` on its stdout once it has bound its port (SO_REUSEPORT off, so it cannot share one)
and reported SERVING (services/common/server.py). The launcher reads that line from the
child's own pipe, so a port taken in between makes the child exit, and the launcher says so,
instead of a health check succeeding against a stranger. A child that exits at any time is
noticed the same way.

A child's stdout (that line, and the console notifications) goes through a relay thread to a
sink, its stderr (the log) straight to where it is wanted: the terminal for `make run`, a log
file for `make demo`.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from services.common.settings import DEFAULT_PORTS, SettingsError

SERVICES = ("inventory", "notify", "scheduler")
SERVING_LINE = re.compile(r"^(\w+) SERVING on (\S+)$")
STARTUP_SECONDS = 120.0  # imports and migrations on a slow, busy machine
STOP_SECONDS = 15.0  # beyond the shutdown grace: then the child is killed

Sink = Callable[[str, str], None]  # (service, line without its newline)


class LaunchError(Exception):
    """The services cannot be started as asked; the message says what to change."""


@dataclass(frozen=True)
class Endpoint:
    """Where one service listens and how its peers (and clients) reach it."""

    service: str
    listen: str

    @property
    def variable(self) -> str:
        return f"{self.service.upper()}_LISTEN"

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def address(self) -> str:
        """The listen address with a wildcard host made connectable."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def check_free(self) -> None:
        """LaunchError unless nothing listens on the address. SO_REUSEADDR is set, as grpc
        does, so a socket of a previous run in TIME_WAIT does not count as taken."""
        if self.port == 0:
            raise LaunchError(
                f"{self.variable}={self.listen}: a fixed port is needed, since the other "
                "services are told where to find this one before it starts"
            )
        try:
            found = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise LaunchError(f"{self.variable}={self.listen}: {e.strerror}") from None
        for family, kind, proto, _, sockaddr in found:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(sockaddr)
                except OSError as e:
                    raise LaunchError(
                        f"{self.service} cannot listen on {self.listen} ({self.variable}): "
                        f"{e.strerror}; another process holds port {self.port} (`make run` "
                        f"already running?). Stop it, or choose a free port: "
                        f"{self.variable}=127.0.0.1:<port>"
                    ) from None


def endpoints_from_environment(environ: Mapping[str, str] | None = None) -> list[Endpoint]:
    """Each service's ``<SERVICE>_LISTEN``, or 127.0.0.1 on its default port."""
    env = os.environ if environ is None else environ
    return [
        Endpoint(name, env.get(f"{name.upper()}_LISTEN") or f"127.0.0.1:{DEFAULT_PORTS[name]}")
        for name in SERVICES
    ]


def check_settings(environ: Mapping[str, str]) -> None:
    """Every service's settings from the environment its child will get, checked before
    anything starts: a bad value or a misspelt variable stops the launch naming it, rather
    than one child failing after the others are up."""
    from services.inventory.settings import load_settings as inventory_settings
    from services.notify.settings import load_settings as notify_settings
    from services.scheduler.settings import load_settings as scheduler_settings

    for load in (scheduler_settings, inventory_settings, notify_settings):
        try:
            load(environ)
        except SettingsError as error:
            raise LaunchError(str(error)) from None


def free_endpoints(environ: Mapping[str, str] | None = None) -> list[Endpoint]:
    """``<SERVICE>_LISTEN`` where set, else a port the system has free now (`make demo`)."""
    env = os.environ if environ is None else environ
    return [
        Endpoint(name, env.get(f"{name.upper()}_LISTEN") or f"127.0.0.1:{free_port()}")
        for name in SERVICES
    ]


# Ports handed out by free_port: below the kernel's ephemeral range, so that no outgoing
# connection (a database client's, a peer channel's) can take one between the check and the
# child's bind, as one bound to port 0 (which comes from that range) could; the services'
# default ports (5005x) lie above it.
_PORTS_FROM = 20000
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def _ephemeral_low() -> int:
    try:
        with open(_EPHEMERAL_RANGE) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port nobody listens on now, chosen at random below the ephemeral range and
    never one of the services' default ports (a `make run` of another checkout may want it)."""
    high = max(_ephemeral_low(), _PORTS_FROM + 1000)
    defaults = set(DEFAULT_PORTS.values())
    for _ in range(200):
        port = random.randrange(_PORTS_FROM, high)
        if port in defaults:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LaunchError(
        f"no free port between {_PORTS_FROM} and {high} (below the ephemeral range, "
        f"{_EPHEMERAL_RANGE}) after 200 tries"
    )


def service_environment(
    endpoints: Iterable[Endpoint], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment every child gets: each one's listen address, and the addresses of the
    peers started with it (never a default port where something else may be listening)."""
    env = dict(os.environ if base is None else base)
    for e in endpoints:
        env[e.variable] = e.listen
        env[f"{e.service.upper()}_ADDRESS"] = e.address
    return env


class ServiceProcesses:
    """The services as children of this process; ``start`` returns once each has said, itself,
    that it is SERVING where it was told to listen."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        env: Mapping[str, str],
        sink: Sink,
        stderr: Callable[[str], IO[bytes] | None] = lambda _service: None,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        """``sink`` gets each line of a child's stdout; its stderr (the log) goes to the file
        ``stderr(service)`` returns, or to this process's stderr for None."""
        self.endpoints = {e.service: e for e in endpoints}
        self.env = dict(env)
        self._sink = sink
        self._stderr = stderr
        self._on_exit = on_exit  # called from a relay thread when a child's output ends
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._relays: list[threading.Thread] = []
        self._serving: dict[str, str] = {}
        self._changed = threading.Condition()

    @property
    def addresses(self) -> dict[str, str]:
        return {name: e.address for name, e in self.endpoints.items()}

    def check_ports(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.check_free()

    def start(self, timeout: float = STARTUP_SECONDS) -> None:
        for name in self.endpoints:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr(name),
                text=True,
                errors="replace",
            )
            self._procs[name] = proc
            relay = threading.Thread(
                target=self._relay, args=(name, proc.stdout), name=f"relay-{name}", daemon=True
            )
            relay.start()
            self._relays.append(relay)
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._serving) < len(self.endpoints):
                self.check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    late = sorted(set(self.endpoints) - set(self._serving))
                    raise LaunchError(f"not SERVING after {timeout:g} s: {', '.join(late)}")
                self._changed.wait(min(left, 0.5))
        for name, said in self._serving.items():
            endpoint = self.endpoints[name]
            if said.rpartition(":")[2] != str(endpoint.port):
                raise LaunchError(
                    f"{name} says it serves on {said}, not on {endpoint.listen} "
                    f"({endpoint.variable})"
                )

    def pid(self, name: str) -> int:
        """The process id of service ``name``'s child (the benchmarks read its CPU time)."""
        return self._procs[name].pid

    def exited(self) -> dict[str, int]:
        """The children that have stopped, with their exit status."""
        return {n: code for n, p in self._procs.items() if (code := p.poll()) is not None}

    def check_alive(self) -> None:
        """LaunchError naming any child that has stopped."""
        for name, code in self.exited().items():
            endpoint = self.endpoints[name]
            when = "while serving" if name in self._serving else "before it was SERVING"
            raise LaunchError(
                f"{name} exited with status {code} {when} on {endpoint.listen} "
                f"({endpoint.variable}); its output says why"
            )

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM to each child still running (each drains its calls), SIGKILL to any still
        there after ``timeout``; the relays then finish with the children's last lines."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for relay in self._relays:
            relay.join(timeout=5)

    def _relay(self, name: str, stream: IO[str] | None) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.rstrip("\n")
            said = SERVING_LINE.match(_message(line))
            if said and said.group(1) == name:
                with self._changed:
                    self._serving[name] = said.group(2)
                    self._changed.notify_all()
            self._sink(name, line)
        self._procs[name].wait()
        with self._changed:
            self._changed.notify_all()
        self._on_exit()


def _message(line: str) -> str:
    """A line's message: the line itself, or the ``message`` of a JSON log object (a service
    started with ``LOG_FORMAT=json`` says it is serving in that form)."""
    if line.startswith("{"):
        try:
            said = json.loads(line)
        except ValueError:
            return line
        if isinstance(said, dict):
            return str(said.get("message", ""))
    return line


@contextmanager
def running(processes: ServiceProcesses) -> Iterator[ServiceProcesses]:
    """Started (ports checked first), then stopped whatever happens."""
    processes.check_ports()
    try:
        processes.start()
        yield processes
    finally:
        processes.stop()
