"""The one in-memory span exporter and SDK provider of the test process: the gRPC client
instrumentation takes the global provider, which can be set only once, so every test that
traces installs this one (``tracing.install(PROVIDER)``) and reads ``SPANS``."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common import tracing

SPANS = InMemorySpanExporter()
PROVIDER = tracing.new_provider("tests", [SimpleSpanProcessor(SPANS)])
