"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables name an exporter.

Off costs nothing: no SDK tracer provider is installed (the API's no-op stays), no
interceptor is added to the gRPC server or channels, no listener to the database engines, and
the helpers below return at once. On (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set, or ``OTEL_TRACES_EXPORTER=console``), the process
gets the SDK with a batch processor and the OTLP/gRPC exporter, which read the rest of the
standard variables themselves (headers, timeout, certificates, ``OTEL_BSP_*``,
``OTEL_TRACES_SAMPLER``), plus the standard instrumentation:

- opentelemetry-instrumentation-grpc: a server interceptor (ahead of ours, so our handler,
  its logs and the outbox rows it writes run inside the server span) and a client interceptor
  on every channel made with ``grpc.insecure_channel`` after start-up (W3C ``traceparent`` in
  the call's metadata). Health checks and reflection are not traced.
- opentelemetry-instrumentation-sqlalchemy: a span per statement on every engine made from
  then on (``instrument_engine``), with the SQL text (bound parameters are not recorded, so no
  patient data reaches a span).

A call's trace continues through the outboxes: the writer stores the current ``traceparent``
with each row (``current_traceparent``), and the relay delivers the row in a span whose parent
is that traceparent (``span``), so its gRPC call, and whatever the receiver does, join the
trace of the call that wrote the row: one booking is one trace from BookAppointment through
the inventory's ReserveStock and, when the inventory refuses it, notify's Publish of
STOCK_AT_RISK and the dispatcher's send.

A database span with no parent is not sampled: a statement that belongs to no traced call or
job (the relays' and dispatcher's idle polls, APScheduler's store, a scrape's queries) would
otherwise make a one-span trace every second. (An outgoing gRPC call with no parent still
starts a trace: it is a client's call.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from sqlalchemy import Engine

_W3C = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable asks for something this build cannot do: refuse to start."""


def enabled() -> bool:
    return _provider is not None


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """At process start-up: install the SDK when the environment names an exporter. Returns
    whether tracing is on."""
    env = os.environ if environ is None else environ
    exporters = _exporters(env)
    if not exporters:
        return False
    install(new_provider(service, [BatchSpanProcessor(e) for e in exporters]))
    return True


def _exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    found: list[SpanExporter] = []
    for name in names:
        if name == "otlp" and endpoint:
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
            )
            if protocol != "grpc":
                raise TracingConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this build exports OTLP over "
                    "gRPC only (port 4317 of a collector or Jaeger); set it to grpc or unset it"
                )
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            found.append(OTLPSpanExporter())
        elif name == "console":
            found.append(ConsoleSpanExporter())
        elif name not in ("otlp", "none"):
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={name!r}: use otlp, console or none (docs/operations.md)"
            )
    return found


def new_provider(service: str, processors: Sequence[SpanProcessor]) -> TracerProvider:
    """An SDK provider for this service: ``service.name`` is the service's unless
    OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one; the sampler is the one the
    environment chooses (OTEL_TRACES_SAMPLER, default parent-based always-on), less lone
    database spans (module docstring)."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)
    provider.sampler = NoLoneStatements(provider.sampler)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


class NoLoneStatements(Sampler):
    """Drops a client span that has no parent and is not a gRPC call (the SQLAlchemy
    instrumentation's statements and connects: they start without attributes, a gRPC client
    span with ``rpc.system``); everything else is the delegate's decision."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT and "rpc.system" not in (attributes or {}):
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoLoneStatements{{{self.delegate.get_description()}}}"


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` from now on: channels, engines and servers made from now on.
    It becomes the global provider too, unless one is set already: the gRPC client
    instrumentation only takes the global one, which can be set once per process (tests
    install one in-memory provider for the whole session)."""
    global _provider, _tracer
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient

    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("services")
    GrpcInstrumentorClient(filter_=_traced_call).instrument()  # type: ignore[no-untyped-call]


def uninstall() -> None:
    """Back to off (tests): later channels, engines and servers are not traced."""
    global _provider, _tracer
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    if _provider is None:
        return
    GrpcInstrumentorClient().uninstrument()  # type: ignore[no-untyped-call]
    EngineTracer.remove_all_event_listeners()  # type: ignore[no-untyped-call]
    _provider = _tracer = None


def instrument_engine(engine: Engine) -> None:
    """A span per statement on ``engine`` (services.common.db makes every engine), with the
    instrumentation's own listeners: what ``SQLAlchemyInstrumentor().instrument(engine=...)``
    attaches, without its process-wide patching of ``create_engine`` (which also imports
    SQLAlchemy's asyncio extension, and greenlet with it) and its version check (it declares
    SQLAlchemy "< 2.1"; the engine events it listens to are the same in 2.1, and
    tests/integration/test_observability.py sees its spans)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    usage = get_meter("services").create_up_down_counter("db.client.connections.usage")
    tracer = _provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call]


def server_interceptors() -> list[grpc.ServerInterceptor]:  # type: ignore[type-arg]
    """The OpenTelemetry server interceptor when tracing is on (to go first), else none."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import server_interceptor

    interceptor = server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=_provider, filter_=_traced_call
    )
    return [interceptor]


_UNTRACED = ("/grpc.health.v1.", "/grpc.reflection.")


def _traced_call(details: Any) -> bool:
    """Not health checks nor reflection: a filter for the server interceptor (its details have
    ``method``) and the client one (``full_method``). The instrumentation's own ``filters``
    cost ~70 us a call each: they test the details against a runtime-checkable Protocol."""
    method = getattr(details, "full_method", None) or details.method
    if isinstance(method, bytes):
        method = method.decode()
    return not str(method).startswith(_UNTRACED)


# What OpenTelemetry's gRPC conventions call a server span's error; a refusal (INVALID_ARGUMENT,
# NOT_FOUND, FAILED_PRECONDITION...) is an answer, not a failure of the server.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def record_code(code: object) -> None:
    """The call's status code on its server span. The instrumentation records ``abort()`` but
    not ``abort_with_status()``, which our domain errors use."""
    if not isinstance(code, grpc.StatusCode):
        return
    current = trace.get_current_span()
    current.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_FAULTS:
        current.set_status(Status(StatusCode.ERROR, code.name))


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with an outbox row; None when
    tracing is off or nothing is being traced."""
    if _provider is None:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def span(
    name: str, traceparent: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Run the block in a new span: a child of ``traceparent`` (an outbox row's), else the
    root of a new trace (a job, a relay's row written outside any trace). Nothing when off."""
    if _tracer is None:
        yield
        return
    parent = _W3C.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()
    with _tracer.start_as_current_span(name, context=parent, attributes=dict(attributes or {})):
        yield
