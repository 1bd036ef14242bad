"""What tracing costs a call: CalculateDose with tracing off (no OTLP endpoint: no SDK, no
interceptor, no database listener), on (every call and statement traced, batches exported over
OTLP/gRPC to a local sink that accepts and drops them, as a collector would), and on with 10 %
of traces sampled (OTEL_TRACES_SAMPLER=parentbased_traceidratio); the scheduler and inventory
as processes on SQLite under a temporary directory, as `make bench` runs them. Besides calls/s,
the scheduler process's CPU time per call.
``python -m bench.run --only tracing``; the echo baseline is measured in the same run."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp

from bench.dose import prepare_dose_request
from bench.harness import (
    cpu_ms_per_call,
    cpu_seconds,
    dev_issuer,
    environment,
    free_port,
    load,
    operator_token,
    running,
)

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@contextmanager
def otlp_sink() -> Iterator[tuple[str, Callable[[], int]]]:
    """An OTLP/gRPC trace receiver on a free port that counts the spans it is sent."""
    spans = 0
    lock = threading.Lock()

    def export(
        request: otlp.ExportTraceServiceRequest, _context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        nonlocal spans
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with lock:
            spans += count
        return otlp.ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    service, method = EXPORT.lstrip("/").split("/")
    handler = grpc.unary_unary_rpc_method_handler(
        export,
        request_deserializer=otlp.ExportTraceServiceRequest.FromString,
        response_serializer=otlp.ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    try:
        yield address, lambda: spans
    finally:
        server.stop(1).wait()


def run(seconds: float, concurrency: int, say: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    checks: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        otlp_sink() as (sink, exported),
        dev_issuer() as issuer,
    ):
        token = operator_token(issuer)
        endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink}"}
        ratio = {
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }
        rounds: list[tuple[str, dict[str, str]]] = [
            ("off", {}),
            ("on", endpoint),
            ("on, 10 % sampled", {**endpoint, **ratio}),
        ]
        for n, (label, traced) in enumerate(rounds):
            databases = {
                name: f"sqlite:///{tmp}/{n}-{name}.db" for name in ("inventory", "scheduler")
            }
            env = environment(issuer, databases, **traced)
            # the exporter flushes its last batch when the processes are stopped
            with running(env, ("inventory", "scheduler")) as procs:
                scheduler = env["SCHEDULER_LISTEN"]
                dose = prepare_dose_request(scheduler, env["INVENTORY_LISTEN"], token)
                say(f"CalculateDose, tracing {label}")
                before, cpu = exported(), cpu_seconds(procs.pid("scheduler"))
                result = load(
                    scheduler,
                    "/infusion.scheduler.v1.SchedulerService/CalculateDose",
                    dose.SerializeToString(),
                    seconds,
                    concurrency,
                    token=token,
                )
                results[f"CalculateDose (2-day induction), tracing {label}"] = result
                used = cpu_seconds(procs.pid("scheduler")) - cpu
                checks[f"scheduler CPU ms per call, tracing {label}"] = cpu_ms_per_call(
                    used, result
                )
            checks[f"spans exported, tracing {label}"] = exported() - before
    return {"results": results, "checks": checks}
