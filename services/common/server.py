"""The one way every service starts, serves and stops.

Synchronous grpcio with one bounded thread pool, shared out between unary calls, streams and
health checks by admission, with keepalive, connection and message limits as gRPC options
(services/common/limits.py; docs/architecture.md says why), and TLS from the service's
certificate files, reloaded when they change (services/common/tls.py; plaintext off loopback
refused). Order at start:
listen with health NOT_SERVING, apply migrations, then SERVING; on SIGTERM/SIGINT: NOT_SERVING
first (so load balancers and Kubernetes probes stop sending), then ``server.stop(grace)``, which
refuses new calls and lets in-flight ones finish within the grace period; ``on_draining`` ends
what would not finish by itself (open streams) right away.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from infusion.audit.v1 import audit_pb2, audit_pb2_grpc
from services.common import limits, metrics, tracing
from services.common.accesslog import ACCESS_LOG
from services.common.audit.api import AuditServicer
from services.common.audit.interceptor import AuditInterceptor
from services.common.audit.trail import AuditTrail
from services.common.auth.service import ServiceAuth
from services.common.interceptors import ServerInterceptor
from services.common.limits import LimitsInterceptor
from services.common.logs import configure_logging, readiness_line
from services.common.processes import run_workers
from services.common.settings import ServiceSettings, SettingsError
from services.common.signals import SignalWaiter
from services.common.tls import ServerTls, server_tls
from services.common.validation_interceptor import ValidationInterceptor

log = logging.getLogger(__name__)
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name

Registrar = Callable[[grpc.Server], Sequence[str]]

# Reflection answers from the process's default descriptor pool, which holds a proto file once
# its generated module is imported. Error replies carry google.rpc.Status with details packed in
# Any (BadRequest, PreconditionFailure, ResourceInfo, ErrorInfo); a client that knows only
# reflection (grpcurl) decodes them by asking for their symbols, so their files are imported
# here, where reflection is set up, rather than left to whichever module happens to use them.
ERROR_DETAIL_FILES = (status_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR)
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
    """A service's ``main``: start up, then serve until SIGTERM or SIGINT. Building and
    starting check what only serving needs (the token issuer, the certificates, TLS off
    loopback): missing, it exits 2 like a bad setting, before it listens. With
    ``<SERVICE>_PROCESSES`` above 1 this process starts and watches that many workers
    instead (services/common/processes.py)."""
    settings = start_up(load)
    if settings.processes > 1:  # a parent of workers (services/common/processes.py)
        return run_workers(settings)
    try:
        build(settings).run_until_signalled()
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    return 0


def _limited_server(settings: ServiceSettings, interceptors: list[Any]) -> grpc.Server:
    """The thread model and every limit (services/common/limits.py says why): one pool
    partitioned between unary calls, streams and a reserve for health checks; transport
    limits as gRPC options."""
    return grpc.server(
        limits.executor(settings),
        interceptors=interceptors,
        options=limits.server_options(settings),
        maximum_concurrent_rpcs=limits.maximum_concurrent_rpcs(settings),
    )


HEALTH_THREADS = 4


def _health_server(settings: ServiceSettings, servicer: health.HealthServicer) -> grpc.Server:
    """The plaintext listener for probes that cannot do TLS (``<SERVICE>_HEALTH_LISTEN``):
    grpc.health.v1 and nothing else (no service, no reflection), the same statuses as the
    main listener, a few threads of its own."""
    server = grpc.server(
        ThreadPoolExecutor(HEALTH_THREADS, thread_name_prefix="health"),
        options=limits.server_options(settings),
        maximum_concurrent_rpcs=2 * HEALTH_THREADS,
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return server


def _described(tls: ServerTls | None) -> str:
    if tls is None:
        return "plaintext"
    return "TLS, client certificates required" if tls.client_certificates_required else "TLS"


def _listen(server: grpc.Server, address: str, tls: ServerTls | None) -> int:
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.grpc_credentials())
    if port == 0:
        raise RuntimeError(f"could not listen on {address}")
    return port


@dataclass
class GrpcService:
    """A gRPC server with health, reflection, the shared interceptors (below, in ``start``), a
    start-up hook and, when ``metrics_listen`` is set, the Prometheus endpoint."""

    settings: ServiceSettings
    register: Registrar
    auth: ServiceAuth
    prepare: Callable[[], None] = lambda: None
    on_serving: Callable[[], None] = lambda: None
    on_stopped: Callable[[], None] = lambda: None
    # once new calls are refused, before the drain: end what would never finish by itself
    # (notify's Subscribe streams), so the drain does not wait out the grace for them
    on_draining: Callable[[], None] = lambda: None
    # the service's audit trail: its interceptor and AuditService (None only in bench/, which
    # measures the cost of auditing against a build without it)
    audit: AuditTrail | None = None
    port: int = 0
    admission: LimitsInterceptor | None = field(default=None, init=False)
    _server: grpc.Server | None = field(default=None, init=False)
    _metrics: metrics.MetricsServer | None = field(default=None, init=False)
    _health: health.HealthServicer | None = field(default=None, init=False)
    _health_server: grpc.Server | None = field(default=None, init=False)
    health_port: int | None = field(default=None, init=False)
    _service_names: list[str] = field(default_factory=list, init=False)

    def start(self) -> int:
        """Listen, migrate/prepare, then report SERVING. Returns the bound port. SettingsError
        (before anything listens): a certificate file is wrong, or plaintext is not allowed."""
        tls = server_tls(self.settings)
        self.admission = LimitsInterceptor(self.settings)
        # outermost first: OpenTelemetry's (so our handler, its logs and the outbox rows it
        # writes run inside the call's server span); errors and the access log; admission
        # (capacity: refused before any token is verified); authentication and permissions;
        # the audit trail (it needs the caller; a patient read refused by the contract is
        # still recorded); the request contract (after authentication: an anonymous caller
        # learns nothing about the fields it got wrong)
        audited = []
        on_denied = None
        if self.audit is not None:
            self.audit.install()
            audit = AuditInterceptor(self.audit, self.auth.policies)
            audited.append(audit)
            on_denied = audit.denied
        server = _limited_server(
            self.settings,
            [
                *tracing.server_interceptors(),
                ServerInterceptor(),
                self.admission,
                self.auth.interceptor(on_denied),
                *audited,
                ValidationInterceptor(),
            ],
        )
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self._service_names = list(self.register(server))
        if self.audit is not None:
            audit_pb2_grpc.add_AuditServiceServicer_to_server(
                AuditServicer(self.audit.db, self.audit.store, self.audit.settle), server
            )
            self._service_names.append(AUDIT_SERVICE)
        if self.settings.reflection:
            reflection.enable_server_reflection(
                [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
            )
        self.port = _listen(server, self.settings.listen, tls)
        log.info("%s listening on %s (%s)", self.settings.service, self.address, _described(tls))
        self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.health_listen:
            self._health_server = _health_server(self.settings, self._health)
            self.health_port = _listen(self._health_server, self.settings.health_listen, None)
            self._health_server.start()
        if self.settings.metrics_listen:
            self._metrics = metrics.serve(self.settings.metrics_listen, tls)
        server.start()
        self._server = server
        self.prepare()
        if self.audit is not None:
            self.audit.start()  # migrated: its tables exist
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
        drained = self._server.stop(grace)
        self.on_draining()
        drained.wait()
        self._server = None
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        if self._health_server is not None:  # last: probes see NOT_SERVING through the drain
            self._health_server.stop(0)
            self._health_server = None
        ACCESS_LOG.flush()
        if self.audit is not None:
            self.audit.stop()  # links what the drained calls recorded
        self.on_stopped()  # after the drain: in-flight calls still needed their resources
        log.info("%s stopped", self.settings.service)

    def _set_status(self, status: int) -> None:
        assert self._health is not None
        for name in ["", *self._service_names]:
            self._health.set(name, status)

    def run_until_signalled(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then drain and stop. The handlers go in
        first, so a signal during migrations stops the service as soon as it has started. The
        "SERVING on" line is what `make run` and `make demo` wait for (services/launcher.py):
        it comes from this process, after it bound its port, so no other server can pass for it."""
        with SignalWaiter() as signals:
            self.start()
            # one write, so no other thread's output can land inside the line
            ready = readiness_line(self.settings.service, self.address, self.settings.log_format)
            sys.stdout.write(f"{ready}\n")
            sys.stdout.flush()
            received = None
            while received is None:
                received = signals.wait()
            log.info("%s received %s: draining", self.settings.service, received.name)
            self.stop()
