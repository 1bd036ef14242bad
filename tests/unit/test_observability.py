"""Logs, metrics and the tracing set-up, without servers: the JSON line's keys and timestamp,
the text line, the access line in the same format, trace ids on the lines of a traced call,
the settings behind them, the call and job counters, and what the tracing set-up accepts."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from services.common import logs, metrics, tracing
from services.common.accesslog import ACCESS_LOG
from services.common.logs import configure_logging
from services.common.settings import SettingsError
from services.scheduler.settings import load_settings

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEYS = ["time", "level", "service", "logger", "message"]


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The process's logging sent to a buffer; put back as pytest had it afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access = (ACCESS_LOG._formatter, ACCESS_LOG._stream, ACCESS_LOG.enabled)
    stream = io.StringIO()
    try:
        yield stream
    finally:
        logs.stop_logging()
        logging.captureWarnings(False)
        ACCESS_LOG.configure(access[0], stream=access[1], enabled=access[2])
        root.handlers[:] = handlers
        root.setLevel(level)


def written(stream: io.StringIO) -> list[str]:
    """Everything logged so far, once the writer threads have written it."""
    ACCESS_LOG.flush()
    assert logs._listener is not None
    logs._listener.stop()  # drains the queue into the stream
    logs._listener.start()
    return stream.getvalue().splitlines()


def test_json_lines_have_the_documented_keys_and_one_timestamp_format(
    output: io.StringIO,
) -> None:
    configure_logging("scheduler", "INFO", "json", stream=output)
    logging.getLogger("services.example").warning("appointment %s is at risk", "appt-1")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("services.example").exception("round failed")
    ACCESS_LOG.record("/pkg.Svc/Get", "NOT_FOUND", 1.234, "req-1", "ipv4:127.0.0.1:5000")
    logging.getLogger("services.example").debug("not at INFO")
    lines = sorted(map(json.loads, written(output)), key=lambda x: x["logger"] == "grpc.access")
    assert len(lines) == 3
    for line in lines:
        assert list(line)[:5] == KEYS
        assert RFC3339_UTC.match(line["time"]), line["time"]
        assert line["service"] == "scheduler"
        assert "trace_id" not in line  # nothing is traced here
    first, failed = lines[0], lines[1]
    assert (first["level"], first["logger"]) == ("WARNING", "services.example")
    assert first["message"] == "appointment appt-1 is at risk"
    assert "ValueError: boom" in failed["exc_info"]
    access = next(x for x in lines if x["logger"] == "grpc.access")
    assert access["message"] == "rpc"
    assert {k: access[k] for k in ("method", "code", "duration_ms", "request_id", "peer")} == {
        "method": "/pkg.Svc/Get",
        "code": "NOT_FOUND",
        "duration_ms": 1.23,
        "request_id": "req-1",
        "peer": "ipv4:127.0.0.1:5000",
    }


def test_text_lines_read_as_one_line_each(output: io.StringIO) -> None:
    configure_logging("inventory", "INFO", "text", stream=output)
    logging.getLogger("services.example").info("seeded %d products", 12)
    ACCESS_LOG.record("/pkg.Svc/Get", "OK", 0.5, "", "ipv4:127.0.0.1:5000")
    seeded, access = sorted(written(output), key=lambda line: "grpc.access" in line)
    assert seeded.endswith(" INFO inventory services.example seeded 12 products")
    assert RFC3339_UTC.match(seeded.split(" ", 1)[0])
    assert access.endswith(
        " INFO inventory grpc.access rpc method=/pkg.Svc/Get code=OK duration_ms=0.5 "
        "request_id= peer=ipv4:127.0.0.1:5000"
    )


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_line_made_from_its_fields_is_the_line_of_its_record(fmt: str) -> None:
    """The access log writes without a LogRecord (Lines.info_line); the text must be what the
    formatter makes of the same record, for every kind of field value an access line has."""
    formatter = logs.formatter("scheduler", fmt)  # type: ignore[arg-type]
    assert isinstance(formatter, logs.Lines)
    fields: dict[str, object] = {
        "method": "/infusion.scheduler.v1.SchedulerService/BookAppointment",
        "code": "INVALID_ARGUMENT",
        "duration_ms": 12.35,
        "request_id": 'r-"1" é\\',
        "peer": "ipv6:[::1]:5000",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
    }
    for created in (1764720000.0, 1764720000.999, 1764720001.0005, 1764723599.5):
        record = logs.record_for("grpc.access", "rpc", created, **fields)
        assert formatter.info_line("grpc.access", "rpc", created, fields) == formatter.format(
            record
        )


def test_timestamps_keep_their_milliseconds_across_seconds() -> None:
    """_rfc3339 keeps the text of the last second: a new second, or an earlier one, must not
    reuse it."""
    assert logs._rfc3339(1764720000.25) == "2025-12-03T00:00:00.250Z"
    assert logs._rfc3339(1764720000.999) == "2025-12-03T00:00:00.999Z"
    assert logs._rfc3339(1764720001.0) == "2025-12-03T00:00:01.000Z"
    assert logs._rfc3339(1764719999.5) == "2025-12-02T23:59:59.500Z"
    assert logs._rfc3339(1764719999.3) == "2025-12-02T23:59:59.300Z"  # not .299
    assert logs._rfc3339(1764719999.9999996) == "2025-12-03T00:00:00.000Z"


def test_lines_written_inside_a_traced_call_carry_its_ids(
    output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = TracerProvider()
    monkeypatch.setattr(tracing, "_provider", provider)
    configure_logging("notify", "INFO", "json", stream=output)
    with provider.get_tracer("test").start_as_current_span("call") as span:
        logging.getLogger("services.example").info("inside")
    logging.getLogger("services.example").info("outside")
    inside, outside = (json.loads(line) for line in written(output))
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside


def test_warning_level_drops_the_access_lines(output: io.StringIO) -> None:
    configure_logging("scheduler", "WARNING", "json", stream=output)
    ACCESS_LOG.record("/pkg.Svc/Get", "OK", 0.5, "")
    logging.getLogger("services.example").warning("kept")
    assert [json.loads(line)["message"] for line in written(output)] == ["kept"]


def test_log_format_and_metrics_listen_are_settings() -> None:
    settings = load_settings(
        {"LOG_FORMAT": "json", "SCHEDULER_METRICS_LISTEN": "127.0.0.1:9151", "LOG_LEVEL": "DEBUG"}
    )
    assert (settings.log_format, settings.metrics_listen) == ("json", "127.0.0.1:9151")
    assert load_settings({}).log_format == "text" and load_settings({}).metrics_listen == ""
    with pytest.raises(SettingsError, match="LOG_FORMAT='xml'"):
        load_settings({"LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="SCHEDULER_METRICS_PORT: unknown setting"):
        load_settings({"SCHEDULER_METRICS_PORT": "9151"})
    variables = type(settings).variables()
    assert {"LOG_FORMAT", "SCHEDULER_METRICS_LISTEN"} <= variables


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_call_metrics_count_by_method_and_code() -> None:
    calls = metrics.rpc("/test.v1.Svc/Get", "unary")
    labels = {"grpc_type": "unary", "grpc_service": "test.v1.Svc", "grpc_method": "Get"}
    ok = {**labels, "grpc_code": "OK"}
    missing = {**labels, "grpc_code": "NOT_FOUND"}
    before = sample("grpc_server_handled_total", ok), sample("grpc_server_handled_total", missing)
    calls.observe("OK", 0.002)
    calls.observe("OK", 0.2)
    calls.observe("NOT_FOUND", 0.001)
    assert sample("grpc_server_handled_total", ok) == before[0] + 2
    assert sample("grpc_server_handled_total", missing) == before[1] + 1
    fast = {**ok, "le": "0.005"}
    assert sample("grpc_server_handling_seconds_bucket", fast) >= 1
    assert sample("grpc_server_handling_seconds_count", ok) >= 2


def test_job_metrics_count_runs_and_failures() -> None:
    runs, failures = (
        sample("job_runs_total", {"job": "t"}),
        sample("job_failures_total", {"job": "t"}),
    )
    with metrics.job("t"):
        pass
    with pytest.raises(RuntimeError), metrics.job("t"):
        raise RuntimeError("down")
    assert sample("job_runs_total", {"job": "t"}) == runs + 2
    assert sample("job_failures_total", {"job": "t"}) == failures + 1


class _Source:
    def __init__(self, value: float) -> None:
        self.value = value

    def read(self) -> list[metrics.Reading]:
        return [metrics.Reading("outbox_pending_rows", {"relay": "unit"}, self.value)]


def test_watched_gauges_are_read_at_scrape_time_and_forgotten_with_their_source() -> None:
    source = _Source(3)
    metrics.watch("unit", source.read)
    assert sample("outbox_pending_rows", {"relay": "unit"}) == 3
    source.value = 5
    assert sample("outbox_pending_rows", {"relay": "unit"}) == 5
    del source
    assert REGISTRY.get_sample_value("outbox_pending_rows", {"relay": "unit"}) is None


def test_tracing_is_off_without_an_exporter_and_refuses_what_it_cannot_do() -> None:
    assert tracing._exporters({}) == []
    assert tracing._exporters({"OTEL_TRACES_EXPORTER": "otlp"}) == []  # no endpoint
    assert (
        tracing._exporters(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}
        )
        == []
    )
    assert (
        tracing._exporters(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}
        )
        == []
    )
    (exporter,) = tracing._exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"})
    assert type(exporter).__name__ == "OTLPSpanExporter"
    with pytest.raises(tracing.TracingConfigError, match="OTLP over gRPC only"):
        tracing._exporters(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            }
        )
    with pytest.raises(tracing.TracingConfigError, match="zipkin"):
        tracing._exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not tracing.enabled()
    assert tracing.current_traceparent() is None
    assert tracing.server_interceptors() == []


def test_a_statement_outside_any_trace_is_not_sampled() -> None:
    sampler = tracing.NoLoneStatements(ALWAYS_ON)
    lone = sampler.should_sample(None, 1, "SELECT", SpanKind.CLIENT)
    assert lone.decision is Decision.DROP
    assert sampler.should_sample(None, 1, "job", SpanKind.INTERNAL).decision.is_sampled()
    call = {"rpc.system": "grpc"}  # a client's call starts a trace
    assert sampler.should_sample(None, 1, "/a.B/C", SpanKind.CLIENT, call).decision.is_sampled()
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("call"):
        parent = trace.set_span_in_context(trace.get_current_span())
        child = sampler.should_sample(parent, 1, "SELECT", SpanKind.CLIENT)
    assert child.decision.is_sampled()


def test_health_checks_and_reflection_are_not_traced() -> None:
    from types import SimpleNamespace

    server = SimpleNamespace(method="/infusion.notify.v1.NotifyService/Publish")
    client = SimpleNamespace(full_method="/infusion.notify.v1.NotifyService/Publish")
    assert tracing._traced_call(server) and tracing._traced_call(client)
    assert not tracing._traced_call(SimpleNamespace(method="/grpc.health.v1.Health/Check"))
    assert not tracing._traced_call(SimpleNamespace(full_method=b"/grpc.health.v1.Health/Watch"))
    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert not tracing._traced_call(SimpleNamespace(method=reflection))


def test_every_stored_job_is_counted_by_name() -> None:
    from services.common import jobstore
    from services.common.identity import service_caller

    def broken() -> None:
        raise RuntimeError("database away")

    jobstore.register("unit.ok", lambda: None, service_caller("inventory"))
    jobstore.register("unit.broken", broken, service_caller("inventory"))
    runs = sample("job_runs_total", {"job": "unit.broken"})
    jobstore.run("unit.ok")
    with pytest.raises(RuntimeError):
        jobstore.run("unit.broken")
    assert sample("job_runs_total", {"job": "unit.ok"}) >= 1
    assert sample("job_runs_total", {"job": "unit.broken"}) == runs + 1
    assert sample("job_failures_total", {"job": "unit.broken"}) >= 1
    assert sample("job_failures_total", {"job": "unit.ok"}) == 0
