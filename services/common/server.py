"""The one way every service starts, serves and stops.

Synchronous grpcio with a bounded thread pool (docs/architecture.md says why). Order at start:
listen with health NOT_SERVING, apply migrations, then SERVING; on SIGTERM/SIGINT: NOT_SERVING
first (so load balancers and Kubernetes probes stop sending), then ``server.stop(grace)``, which
refuses new calls and lets in-flight ones finish within the grace period.
"""

from __future__ import annotations

import logging
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

from services.common import metrics, tracing
from services.common.accesslog import ACCESS_LOG
from services.common.interceptors import ServerInterceptor
from services.common.logs import configure_logging
from services.common.settings import ServiceSettings, SettingsError

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.Server], Sequence[str]]
S = TypeVar("S", bound=ServiceSettings)


def start_up(load: Callable[[], S]) -> S:
    """Settings first, then logging and tracing: a wrong or unknown variable (ours or an
    ``OTEL_*`` one this build cannot honour) is named and the process exits with status 2
    before it does anything else."""
    try:
        settings = load()
        configure_logging(settings.service, settings.log_level, settings.log_format)
        tracing.configure(settings.service)
    except (SettingsError, tracing.TracingConfigError) as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def serve(load: Callable[[], S], build: Callable[[S], GrpcService]) -> int:
    """A service's ``main``: start up, then serve until SIGTERM or SIGINT."""
    build(start_up(load)).run_until_signalled()
    return 0


@dataclass
class GrpcService:
    """A gRPC server with health, reflection, the shared interceptor (after OpenTelemetry's
    when tracing is on), a start-up hook and, when ``metrics_listen`` is set, the Prometheus
    endpoint."""

    settings: ServiceSettings
    register: Registrar
    prepare: Callable[[], None] = lambda: None
    on_serving: Callable[[], None] = lambda: None
    on_stopped: Callable[[], None] = lambda: None
    port: int = 0
    _server: grpc.Server | None = field(default=None, init=False)
    _metrics: metrics.MetricsServer | None = field(default=None, init=False)
    _health: health.HealthServicer | None = field(default=None, init=False)
    _service_names: list[str] = field(default_factory=list, init=False)

    def start(self) -> int:
        """Listen, migrate/prepare, then report SERVING. Returns the bound port."""
        server = grpc.server(
            ThreadPoolExecutor(
                max_workers=self.settings.grpc_workers,
                thread_name_prefix=f"{self.settings.service}-rpc",
            ),
            # OpenTelemetry's first: our handler (its logs, the outbox rows it writes) runs
            # inside the call's server span
            interceptors=[*tracing.server_interceptors(), ServerInterceptor()],
            options=[("grpc.so_reuseport", 0)],
        )
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self._service_names = list(self.register(server))
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.port = server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise RuntimeError(f"could not listen on {self.settings.listen}")
        self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.metrics_listen:
            self._metrics = metrics.serve(self.settings.metrics_listen)
        server.start()
        self._server = server
        self.prepare()
        self._set_status(health_pb2.HealthCheckResponse.SERVING)
        self.on_serving()
        log.info("%s serving on %s", self.settings.service, self.address)
        if self._metrics is not None:
            host = self.settings.metrics_listen.rpartition(":")[0]
            log.info(
                "%s metrics on http://%s:%d/metrics",
                self.settings.service,
                host,
                self._metrics.port,
            )
        return self.port

    @property
    def address(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        """The bound port of ``/metrics`` (``<SERVICE>_METRICS_LISTEN`` may ask for port 0)."""
        return self._metrics.port if self._metrics is not None else None

    def stop(self, grace: float | None = None) -> None:
        if self._server is None:
            return
        self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._server.stop(grace).wait()
        self._server = None
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
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
        stop.wait()
        self.stop()
