"""Prometheus metrics (prometheus-client), served on their own HTTP port
(``<SERVICE>_METRICS_LISTEN``; docs/operations.md, "Observability", lists every series), over
HTTPS with the service's certificate when it has one (docs/security.md, "Transport").

- Calls: ``grpc_server_handled_total`` and ``grpc_server_handling_seconds`` with the labels of
  go-grpc-prometheus / py-grpc-prometheus (``grpc_type``, ``grpc_service``, ``grpc_method``,
  ``grpc_code``), so their dashboards work; the histogram has ``grpc_code`` too, so a fast
  refusal does not hide in the latency of the calls that did work. The label children are made
  once per method (``rpc``), and per code the first time it is seen: a call only increments.
- Background work: ``job_runs_total`` / ``job_failures_total`` / ``job_duration_seconds`` by
  job (every stored APScheduler job, every round of a relay or the dispatcher), the relays'
  ``outbox_deliveries_total`` and notify's ``notify_deliveries_total`` by outcome.
- Read at scrape time, never by a loop of ours (``watch``): each relay's outbox backlog and
  the age of its oldest undelivered row, notify's open deliveries, the database pool's use.
  Each is one cheap query (an index covers it) or no query at all.

One process per service: the default registry is the process's. With several processes per
service (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), the counters
and histograms would need that mode's files and the scrape-time gauges to be read by one
process only; with several replicas (pods), each reports the same database backlog, so
dashboards take ``max`` of those, not ``sum``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from services.common.tls import Reloading, ServerTls

log = logging.getLogger(__name__)
disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series: half as many, and nothing reads them

_RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method", "grpc_code")
# prometheus-client's defaults, with 1 ms and 2.5 ms in front: most of our calls take a few ms
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and status code.",
    _RPC_LABELS,
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time the server took to handle an RPC (to the last response), by method and code.",
    _RPC_LABELS,
    buckets=_RPC_BUCKETS,
)
JOB_RUNS = Counter("job_runs_total", "Runs of a background job or loop round.", ["job"])
JOB_FAILURES = Counter(
    "job_failures_total", "Runs of a background job or loop round that raised.", ["job"]
)
JOB_SECONDS = Histogram(
    "job_duration_seconds",
    "How long a background job or loop round took.",
    ["job"],
    buckets=(0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300, 900),
)
OUTBOX_DELIVERIES = Counter(
    "outbox_deliveries_total",
    "Outbox rows a relay handed to their receiver, by result "
    "(delivered, failed = retried later, dead_lettered).",
    ["relay", "result"],
)
NOTIFY_DELIVERIES = Counter(
    "notify_deliveries_total",
    "Notify's delivery attempts by channel and result (delivered, temporary_failure, "
    "permanent_failure), and deliveries that expired unsent (expired).",
    ["channel", "result"],
)


class _Code(NamedTuple):
    handled: Any
    handling: Any


class MethodMetrics:
    """One method's label children, made once: ``observe`` only looks one up and counts."""

    def __init__(self, method: str, grpc_type: str) -> None:
        service, _, name = method.lstrip("/").partition("/")
        self._labels = (grpc_type, service, name)
        self._codes: dict[str, _Code] = {}
        self._child("OK")

    def _child(self, code: str) -> _Code:
        child = _Code(HANDLED.labels(*self._labels, code), HANDLING.labels(*self._labels, code))
        self._codes[code] = child
        return child

    def observe(self, code: str, seconds: float) -> None:
        child = self._codes.get(code) or self._child(code)
        child.handled.inc()
        child.handling.observe(seconds)


def rpc(method: str, grpc_type: str) -> MethodMetrics:
    """The metrics of one server method (``grpc_type``: unary, server_stream, ...)."""
    return MethodMetrics(method, grpc_type)


@contextlib.contextmanager
def job(name: str) -> Iterator[None]:
    """Count and time one run of a job; a run that raises is a failure (and still raises)."""
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        JOB_FAILURES.labels(name).inc()
        raise
    finally:
        JOB_RUNS.labels(name).inc()
        JOB_SECONDS.labels(name).observe(time.perf_counter() - started)


# ---- read at scrape time ---------------------------------------------------------------------


class Reading(NamedTuple):
    """One gauge sample from a watched source: the family (``GAUGES``), labels, value."""

    family: str
    labels: dict[str, str]
    value: float


GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "outbox_pending_rows": (
        "Outbox rows not yet delivered (dead letters excluded), per relay.",
        ("relay",),
    ),
    "outbox_oldest_pending_age_seconds": (
        "Age of the oldest undelivered outbox row (0 when none), per relay.",
        ("relay",),
    ),
    "outbox_dead_letter_rows": (
        "Outbox rows a relay gave up on (refused by the receiver, or out of attempts).",
        ("relay",),
    ),
    "notify_deliveries_open": (
        "Notify's deliveries not yet finished, by status (PENDING, TEMPORARY_FAILURE, SENDING).",
        ("status",),
    ),
    "notify_oldest_due_delivery_age_seconds": (
        "How long the longest-waiting due delivery has been due (0 when none is).",
        (),
    ),
    "db_pool_checked_out_connections": ("Database connections in use.", ("pool",)),
    "db_pool_idle_connections": ("Database connections open and idle in the pool.", ("pool",)),
    "db_pool_max_connections": (
        "Most connections the pool opens (pool size plus overflow).",
        ("pool",),
    ),
}
Source = Callable[[], Iterable[Reading]]


class _Watched(Collector):
    """The scrape-time gauges: each source is a bound method of a live object (a relay, the
    dispatcher, a database), held weakly, so an object that is gone stops reporting. A source
    that fails (the database is away) is skipped for that scrape and logged."""

    def __init__(self) -> None:
        self._sources: dict[str, Callable[[], Source | None]] = {}
        self._lock = threading.Lock()

    def watch(self, key: str, source: Source) -> None:
        ref = weakref.WeakMethod(source)  # a bound method
        with self._lock:
            self._sources[key] = ref  # a new source of the same key replaces the old

    def unwatch(self, key: str, source: Source) -> None:
        with self._lock:
            if key in self._sources and self._sources[key]() == source:
                del self._sources[key]

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(n, h, labels=labels) for n, (h, labels) in GAUGES.items()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families = {n: GaugeMetricFamily(n, h, labels=lb) for n, (h, lb) in GAUGES.items()}
        with self._lock:
            sources = list(self._sources.items())
        for key, ref in sources:
            source = ref()
            if source is None:
                with self._lock:
                    self._sources.pop(key, None)
                continue
            try:
                readings = list(source())
            except Exception as error:  # logged as text: the error's frames would hold sources
                log.warning("metrics: %s could not be read: %s", key, str(error))
                continue
            finally:
                del source
            for reading in readings:
                family = families[reading.family]
                names = GAUGES[reading.family][1]
                family.add_metric([reading.labels[n] for n in names], reading.value)
        return list(families.values())


WATCHED = _Watched()
REGISTRY.register(WATCHED)


def watch(key: str, source: Source) -> None:
    """Report ``source``'s readings at every scrape (``key`` names it; registering the same
    key again replaces the earlier source)."""
    WATCHED.watch(key, source)


def unwatch(key: str, source: Source) -> None:
    """Stop reporting ``source`` (its owner stopped), unless another replaced it."""
    WATCHED.unwatch(key, source)


# ---- the HTTP endpoint -----------------------------------------------------------------------


@dataclass
class MetricsServer:
    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


HANDSHAKE_SECONDS = 10.0  # a client that connects and says nothing is dropped after this


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (prometheus-client's own server does the same)."""


class _Server(ThreadingWSGIServer):
    """prometheus-client's threading WSGI server, with TLS made per connection from the
    current certificate files (services/common/tls.py): its own ``start_http_server`` loads
    them once. The handshake runs on the connection's thread, so a slow or refused client
    holds up no other."""

    contexts: Reloading[ssl.SSLContext] | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        if self.contexts is None:
            return connection, address
        self.contexts.refresh()
        connection.settimeout(HANDSHAKE_SECONDS)
        wrapped = self.contexts.value.wrap_socket(
            connection, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as error:
                log.debug("metrics: TLS handshake with %s failed: %s", client_address, error)
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


def serve(listen: str, tls: ServerTls | None = None) -> MetricsServer:
    """``/metrics`` on ``host:port`` (port 0: any free port), in a daemon thread; over TLS
    with the service's certificate (and its callers' CA: client certificates required) when
    ``tls`` is given."""
    host, _, port = listen.rpartition(":")
    family, _, _, _, address = socket.getaddrinfo(
        host.strip("[]") or "0.0.0.0", int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(_Server):
        address_family = family

    server = make_server(str(address[0]), int(port), make_wsgi_app(), Server, handler_class=_Quiet)
    if tls is not None:
        server.contexts = tls.ssl_contexts("metrics")
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
