"""Scheduler entry point: ``python -m services.scheduler``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import grpc
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from infusion.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.common import jobstore
from services.common.audit.store import AuditStore
from services.common.audit.trail import AuditTrail
from services.common.auth.service import ServiceAuth
from services.common.channels import peer_channel
from services.common.clock import Clock, SystemClock
from services.common.crud import Mutations
from services.common.db import Database
from services.common.idempotency import IdempotencyStore
from services.common.identity import service_caller
from services.common.migrations import upgrade
from services.common.server import GrpcService, serve
from services.scheduler.adapters.inventory_forecast import ForecastPush
from services.scheduler.adapters.inventory_products import InventoryProducts
from services.scheduler.adapters.inventory_relay import StockRelay
from services.scheduler.adapters.inventory_stock import InventoryStock
from services.scheduler.adapters.notify_relay import relay_to_notify
from services.scheduler.api.servicer import SchedulerServicer
from services.scheduler.jobs import SchedulerJobs
from services.scheduler.settings import SchedulerSettings, load_settings
from services.scheduler.store.models import audit_tables, idempotency_keys, job_table
from services.scheduler.usecases.bookings import Bookings
from services.scheduler.usecases.doses import Doses
from services.scheduler.usecases.outcomes import Outcomes
from services.scheduler.usecases.records import Records
from services.scheduler.usecases.regimens import Regimens
from services.scheduler.usecases.schedules import Schedules


def build(
    settings: SchedulerSettings,
    clock: Clock | None = None,
    products: InventoryProducts | None = None,
    auth: ServiceAuth | None = None,
) -> GrpcService:
    """Wire the scheduler; ``products`` defaults to a client of the inventory peer, ``auth``
    to the token settings (in-process tests pass their issuer's)."""
    clock = clock or SystemClock()
    auth = auth or ServiceAuth.from_settings(settings, calls_peers=True)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    audit = AuditTrail(
        "scheduler", db, AuditStore("scheduler", audit_tables), clock, settings.audit_linker
    )
    # every call to a peer carries the scheduler's own token, over TLS when it has a CA
    # bundle (the dose lookup, the stock view, the stock relay and the forecast push through
    # it, notifications)
    inventory_channel = peer_channel(settings, "inventory", auth.tokens)
    if products is None:
        products = InventoryProducts(peer_channel(settings, "inventory", auth.tokens))
    records = Records(db, clock, products.exists)
    doses = Doses(records, products.spec)
    job_config = settings.job_settings()
    bookings = Bookings(
        db,
        clock,
        records,
        doses,
        InventoryStock(inventory_channel),
        reminder_offsets_hours=job_config.reminder_offsets_hours,
    )
    api = SchedulerServicer(
        records,
        doses,
        bookings,
        Schedules(db, clock, records, bookings),
        Outcomes(db, clock, records, products.spec, settings.review_policies()),
        Regimens(db, clock, records, doses, products.sc),
        Mutations(IdempotencyStore(db, idempotency_keys, clock), "scheduler"),
        clock,
    )

    # Notifications: INFUSION_DUE, APPOINTMENT_REMINDER and MISSED_INFUSION into the
    # outbox; the relay publishes them to notify.
    jobs = SchedulerJobs(
        db, clock, job_config, scheduler=jobstore.database_scheduler(db, job_table)
    )
    stock = StockRelay(db, clock, inventory_channel)
    notify_channel = peer_channel(settings, "notify", auth.tokens)
    relay = relay_to_notify(db, clock, notify_channel, settings.relay_policy(), stock=stock.deliver)
    jobs.on_written.append(relay.wake)

    def register(server: grpc.Server) -> Sequence[str]:
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(api, server)
        return [scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name]

    forecast = ForecastPush(db, clock, records, bookings)
    jobstore.register("scheduler.forecast", forecast.push, service_caller("scheduler"))

    def schedule_forecast() -> None:
        # nightly, and once shortly after start (the dedupe key makes a second push of the
        # same day a no-op)
        jobstore.ensure_job(
            jobs.scheduler,
            "forecast-push",
            CronTrigger(hour=2, minute=0, timezone="UTC"),
            "scheduler.forecast",
            coalesce=True,
            misfire_grace_time=6 * 3600,
        )
        jobstore.ensure_job(
            jobs.scheduler,
            "forecast-push-at-start",
            DateTrigger(run_date=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)),
            "scheduler.forecast",
        )

    def serving() -> None:
        if settings.jobs:
            jobs.start(schedule_forecast)
            relay.start()

    def stopped() -> None:
        jobs.shutdown()
        relay.stop()
        notify_channel.close()
        inventory_channel.close()
        products.close()
        db.dispose()

    return GrpcService(
        settings=settings,
        register=register,
        auth=auth,
        audit=audit,
        prepare=lambda: upgrade("scheduler", db.engine),
        on_serving=serving,
        on_stopped=stopped,
    )


if __name__ == "__main__":
    raise SystemExit(serve(load_settings, build))
