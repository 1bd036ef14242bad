"""Tracing across the three services, and the metrics endpoint, with in-process servers on
SQLite and PostgreSQL.

Tracing: an in-memory exporter takes the place of the OTLP one; the relays and the dispatcher
are run explicitly. A booking the inventory cannot supply is one trace: BookAppointment at
the scheduler → its outbox row → the stock relay → ReserveStock at the inventory (refused) →
STOCK_AT_RISK in the scheduler's outbox → the relay → Publish at notify → the dispatcher's
send. A recall is one trace through the inventory's outbox: RecallLot → LOT_RECALLED →
Publish → send.

Metrics: a scheduler with ``SCHEDULER_METRICS_LISTEN=127.0.0.1:0`` is scraped over HTTP after
a few calls; the call series and the outbox's backlog are there.
"""

from __future__ import annotations

import datetime as dt
import urllib.request
from collections.abc import Iterator, Sequence

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.notify.v1 import notify_pb2 as npb
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common import tracing
from services.common.clock import FixedClock
from services.common.db import Database
from services.inventory.adapters.notify_relay import relay_to_notify as inventory_relay
from services.notify.domain.model import Channel
from services.scheduler.__main__ import build as build_scheduler
from services.scheduler.adapters.inventory_products import InventoryProducts
from services.scheduler.adapters.inventory_relay import StockRelay
from services.scheduler.adapters.notify_relay import relay_to_notify as scheduler_relay
from services.scheduler.settings import load_settings as scheduler_settings
from services.scheduler.store.events import Event, write_events
from services.scheduler.store.models import outbox
from tests.integration.builders import book, patient_plan, site_with_chairs
from tests.integration.conftest import NOW, Platform, request_id, stock_site
from tests.integration.notify_conftest import (
    Factory,
    NotifyServer,
    create,
    notify_factory,  # noqa: F401  (a fixture)
)
from tests.integration.spans import PROVIDER, SPANS  # noqa: E402
from tests.issuer import TestIssuer  # noqa: E402


@pytest.fixture(autouse=True)
def traced() -> Iterator[InMemorySpanExporter]:
    """Tracing on before the servers, channels and engines of the test are made."""
    tracing.install(PROVIDER)
    SPANS.clear()
    try:
        yield SPANS
    finally:
        tracing.uninstall()


def scheduler_url(database_url: str) -> str:
    """The platform fixture's scheduler database."""
    if database_url.startswith("sqlite"):
        return database_url.replace("test.db", "scheduler.db")
    return database_url


def server_span(spans: Sequence[ReadableSpan], method: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name.endswith(f"/{method}")]
    return found


def descends_from(
    span: ReadableSpan, ancestor: ReadableSpan, spans: Sequence[ReadableSpan]
) -> bool:
    """``ancestor`` is on the chain of parents of ``span`` (across services: the parents of
    server spans are the callers' client spans, carried in the call's metadata)."""
    by_id = {s.context.span_id: s for s in spans}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


def pharmacy(notify: NotifyServer, site_id: str) -> None:
    create(
        notify,
        external_ref="pharmacy",
        site_ids=[site_id],
        preferences=[
            npb.Preference(topic=t, channels=[npb.CHANNEL_EMAIL])
            for t in (npb.TOPIC_STOCK_AT_RISK, npb.TOPIC_LOT_RECALLED)
        ],
    )


def test_a_booking_is_one_trace_across_the_three_services(
    platform: Platform,
    notify_factory: Factory,  # noqa: F811
    database_url: str,
) -> None:
    notify = notify_factory()
    site, chairs = site_with_chairs(platform)
    stock_site(platform, site.id)  # and no stock: the reservation is refused
    pharmacy(notify, site.id)
    plan = patient_plan(platform, site, "MRN-T")
    db = Database(scheduler_url(database_url))
    inventory_channel = platform.issuer.service_channel("scheduler", platform.inventory_address)
    stock = StockRelay(db, platform.clock, inventory_channel)
    notify_channel = platform.issuer.service_channel("scheduler", notify.address)
    relay = scheduler_relay(db, platform.clock, notify_channel, stock=stock.deliver)
    try:
        SPANS.clear()  # the set-up's calls are traces of their own
        book(platform, plan, chairs[0], dt.date(2026, 12, 1), 9)
        relay.drain()  # ReserveStock refused: AT_RISK, and STOCK_AT_RISK into the outbox
        relay.drain()  # STOCK_AT_RISK → notify's Publish
        assert notify.drain() == 1  # the pharmacy's email
    finally:
        relay.stop()
        notify_channel.close()
        inventory_channel.close()
        db.dispose()
    assert [m.topic for m in notify.recorders[Channel.EMAIL].sent] == ["STOCK_AT_RISK"]
    spans = SPANS.get_finished_spans()
    booking = server_span(spans, "BookAppointment")
    assert booking.attributes is not None
    assert booking.attributes["rpc.service"] == "infusion.scheduler.v1.SchedulerService"
    booked = [s for s in spans if s.context.trace_id == booking.context.trace_id]
    reserve = server_span(booked, "ReserveStock")
    # three Publishes: STOCK_AT_RISK and the chair boards' two BOARD_CHANGED signals (the
    # booking, then its stock at risk); the email is sent for the one of STOCK_AT_RISK
    (send,) = [s for s in booked if s.name == "deliver EMAIL"]
    publishes = [s for s in booked if s.kind is SpanKind.SERVER and s.name.endswith("/Publish")]
    assert len(publishes) == 3
    (publish,) = [p for p in publishes if descends_from(send, p, booked)]
    assert reserve.attributes is not None and publish.attributes is not None
    assert reserve.attributes["rpc.service"] == "infusion.inventory.v1.InventoryService"
    assert publish.attributes["rpc.service"] == "infusion.notify.v1.NotifyService"
    assert (
        reserve.attributes["rpc.grpc.status_code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    )
    assert descends_from(reserve, booking, booked)
    assert all(descends_from(p, booking, booked) for p in publishes)
    # the relay's rounds and the outbox rows in between are in the trace too, and SQL spans
    # from each service's database work
    assert {s.name for s in booked} >= {"outbox RESERVE_STOCK", "outbox STOCK_AT_RISK"}
    assert any(s.attributes and "db.statement" in s.attributes for s in booked) or any(
        s.attributes and "db.query.text" in s.attributes for s in booked
    )


def test_a_recall_reaches_notify_in_its_trace_through_the_inventory_outbox(
    platform: Platform,
    notify_factory: Factory,  # noqa: F811
    database_url: str,
) -> None:
    notify = notify_factory()
    stock_site(platform, "site-r")
    pharmacy(notify, "site-r")
    product = platform.inventory.GetProduct(inv.GetProductRequest(id="privigen")).product
    platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id="site-r",
            product_id=product.id,
            presentation_grams="10",
            lot_number="RC-1",
            expiry_date=Date(year=2028, month=1, day=31),
            vials=3,
            unit_cost=Money(currency_code="GBP", units=340),  # £34/g (docs/clinical-rules.md#cost)
            request_id=request_id(),
        )
    )
    db = Database(database_url)
    channel = platform.issuer.service_channel("inventory", notify.address)
    relay = inventory_relay(db, platform.clock, channel)
    try:
        SPANS.clear()
        platform.inventory.RecallLot(
            inv.RecallLotRequest(
                product_id=product.id,
                lot_number="RC-1",
                reason="manufacturer withdrawal",
                request_id=request_id(),
            )
        )
        assert relay.drain().delivered == 1
        assert notify.drain() == 1
    finally:
        relay.stop()
        channel.close()
        db.dispose()
    spans = SPANS.get_finished_spans()
    recall = server_span(spans, "RecallLot")
    same = [s for s in spans if s.context.trace_id == recall.context.trace_id]
    publish = server_span(same, "Publish")
    assert descends_from(publish, recall, same)
    (send,) = [s for s in same if s.name == "deliver EMAIL"]
    assert descends_from(send, publish, same)


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """GET /metrics and parse it: sample name → [(labels, value)]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The one sample of ``name`` with these labels (among others); 0 if there is none yet."""
    matches = [v for got, v in found.get(name, []) if labels.items() <= got.items()]
    assert len(matches) <= 1, (name, labels, matches)
    return matches[0] if matches else 0.0


def test_the_metrics_endpoint_serves_the_call_and_outbox_series(
    database_url: str, issuer: TestIssuer
) -> None:
    tracing.uninstall()  # metrics alone
    clock = FixedClock(NOW)
    settings = scheduler_settings(
        {
            "SCHEDULER_DATABASE_URL": database_url,
            "SCHEDULER_LISTEN": "127.0.0.1:0",
            "SCHEDULER_METRICS_LISTEN": "127.0.0.1:0",
            "SCHEDULER_JOBS": "0",
            "SCHEDULER_AUDIT_LINKER": "thread",
            "SCHEDULER_SHUTDOWN_GRACE_SECONDS": "1",
        }
    )
    products = InventoryProducts(grpc.insecure_channel("127.0.0.1:9"))  # not called here
    service = build_scheduler(settings, clock, products, issuer.service_auth("scheduler"))
    service.start()
    channel = issuer.channel(service.address)
    db = Database(database_url)
    try:
        assert service.metrics_port
        before = scrape(service.metrics_port)  # the counters are the process's: count from here
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        for n in range(3):
            stub.CreateSite(
                pb.CreateSiteRequest(
                    request_id=f"metrics-site-{n}",
                    site=pb.Site(
                        organisation_id="org-1", display_name=f"Unit {n}", time_zone="UTC"
                    ),
                )
            )
        with pytest.raises(grpc.RpcError):
            stub.GetAppointment(pb.GetAppointmentRequest(id="no-such-appointment"))
        with db.write() as session:  # two events owed, the older written 90 s ago
            write_events(
                session, outbox, [Event("X", "metrics-1", {})], NOW - dt.timedelta(seconds=90)
            )
            write_events(session, outbox, [Event("X", "metrics-2", {})], NOW)
        found = scrape(service.metrics_port)
    finally:
        channel.close()
        service.stop(0)
        db.dispose()

    def added(name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    calls = {"grpc_service": "infusion.scheduler.v1.SchedulerService", "grpc_type": "unary"}
    created = {"grpc_method": "CreateSite", "grpc_code": "OK", **calls}
    missing = {"grpc_method": "GetAppointment", "grpc_code": "NOT_FOUND", **calls}
    assert added("grpc_server_handled_total", **created) == 3
    assert added("grpc_server_handled_total", **missing) == 1
    assert added("grpc_server_handling_seconds_count", **created) == 3
    assert added("grpc_server_handling_seconds_bucket", le="+Inf", **created) == 3
    relay = {"relay": "scheduler-outbox-relay"}
    assert value(found, "outbox_pending_rows", **relay) == 2
    assert value(found, "outbox_oldest_pending_age_seconds", **relay) == 90
    assert value(found, "outbox_dead_letter_rows", **relay) == 0
    assert value(found, "db_pool_max_connections", pool=db.name) == 20


def test_notify_counts_its_deliveries_and_reports_its_queue(
    notify_factory: Factory,  # noqa: F811
) -> None:
    from prometheus_client import REGISTRY

    from services.notify.adapters.channels import TemporaryFailure
    from tests.integration.notify_conftest import lot_expiring, publish

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    notify = notify_factory()
    pharmacist = create(
        notify,
        preferences=[npb.Preference(topic=npb.TOPIC_LOT_EXPIRING, channels=[npb.CHANNEL_EMAIL])],
    )
    delivered = sample("notify_deliveries_total", channel="EMAIL", result="delivered")
    retried = sample("notify_deliveries_total", channel="EMAIL", result="temporary_failure")
    publish(notify, npb.TOPIC_LOT_EXPIRING, lot_expiring(), [pharmacist.id])
    assert sample("notify_deliveries_open", status="PENDING") == 1
    notify.clock.advance(dt.timedelta(minutes=5))  # due 5 minutes ago
    assert sample("notify_oldest_due_delivery_age_seconds") == 300
    notify.recorders[Channel.EMAIL].fail_with.append(TemporaryFailure("mailbox busy"))
    assert notify.run_once() == 1  # the first attempt fails: retried later
    assert sample("notify_deliveries_open", status="TEMPORARY_FAILURE") == 1
    assert sample("notify_oldest_due_delivery_age_seconds") == 0  # not due again yet
    notify.clock.advance(dt.timedelta(hours=2))
    assert notify.run_once() == 1
    assert sample("notify_deliveries_total", channel="EMAIL", result="delivered") == delivered + 1
    assert (
        sample("notify_deliveries_total", channel="EMAIL", result="temporary_failure")
        == retried + 1
    )
    assert sample("notify_deliveries_open", status="PENDING") == 0
    assert sample("notify_deliveries_open", status="TEMPORARY_FAILURE") == 0
