"""The one way every service starts, serves and stops.

Synchronous grpcio with a bounded thread pool (docs/architecture.md says why). Order at start:
listen with health NOT_SERVING, apply migrations, then SERVING; on SIGTERM/SIGINT: NOT_SERVING
first (so load balancers and Kubernetes probes stop sending), then ``server.stop(grace)``, which
refuses new calls and lets in-flight ones finish within the grace period.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.accesslog import ACCESS_LOG
from services.common.auth.service import ServiceAuth
from services.common.interceptors import ServerInterceptor
from services.common.settings import ServiceSettings, SettingsError

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.Server], Sequence[str]]
S = TypeVar("S", bound=ServiceSettings)


def start_up(load: Callable[[], S]) -> S:
    """Settings first, then logging: a wrong or unknown variable is named and the process
    exits with status 2 before it does anything else."""
    try:
        settings = load()
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    return settings


def serve(load: Callable[[], S], build: Callable[[S], GrpcService]) -> int:
    """A service's ``main``: start up, then serve until SIGTERM or SIGINT. Building checks
    what only serving needs (the token issuer): missing, it exits 2 like a bad setting."""
    settings = start_up(load)
    try:
        service = build(settings)
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    service.run_until_signalled()
    return 0


def configure_logging(level: str | None = None) -> None:
    """Request threads only queue log records; one listener thread formats and writes them, so
    a slow stderr (a pipe, a container log driver) never holds up a call. ``LOG_LEVEL`` sets
    the level (default INFO: one access line per call)."""
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, stream)
    listener.start()
    atexit.register(listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [_InProcessQueueHandler(records)]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO"))


class _InProcessQueueHandler(logging.handlers.QueueHandler):
    """Hands the record over unformatted: the listener thread formats it. (The stdlib handler
    formats in the caller, to make records picklable for other processes; ours stay here.)"""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


@dataclass
class GrpcService:
    """A gRPC server with health, reflection, the shared interceptors (errors and access
    log, then authentication) and a start-up hook."""

    settings: ServiceSettings
    register: Registrar
    auth: ServiceAuth
    prepare: Callable[[], None] = lambda: None
    on_serving: Callable[[], None] = lambda: None
    on_stopped: Callable[[], None] = lambda: None
    port: int = 0
    _server: grpc.Server | None = field(default=None, init=False)
    _health: health.HealthServicer | None = field(default=None, init=False)
    _service_names: list[str] = field(default_factory=list, init=False)

    def start(self) -> int:
        """Listen, migrate/prepare, then report SERVING. Returns the bound port."""
        server = grpc.server(
            ThreadPoolExecutor(
                max_workers=self.settings.grpc_workers,
                thread_name_prefix=f"{self.settings.service}-rpc",
            ),
            interceptors=[ServerInterceptor(), self.auth.interceptor()],
            options=[("grpc.so_reuseport", 0)],
        )
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self._service_names = list(self.register(server))
        if self.settings.reflection:
            reflection.enable_server_reflection(
                [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
            )
        self.port = server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise RuntimeError(f"could not listen on {self.settings.listen}")
        self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        server.start()
        self._server = server
        self.prepare()
        self._set_status(health_pb2.HealthCheckResponse.SERVING)
        self.on_serving()
        log.info("%s serving on %s", self.settings.service, self.address)
        return self.port

    @property
    def address(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        if self._server is None:
            return
        self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._server.stop(grace).wait()
        self._server = None
        ACCESS_LOG.flush()
        self.on_stopped()  # after the drain: in-flight calls still needed their resources
        log.info("%s stopped", self.settings.service)

    def _set_status(self, status: int) -> None:
        assert self._health is not None
        for name in ["", *self._service_names]:
            self._health.set(name, status)

    def run_until_signalled(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then drain and stop."""
        stop = threading.Event()

        def _handle(signum: int, _frame: FrameType | None) -> None:
            log.info("%s received %s: draining", self.settings.service, signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)
        self.start()
        print(f"{self.settings.service} SERVING on {self.address}", flush=True)
        stop.wait()
        self.stop()
