"""Notify entry point: ``python -m services.notify``.

Wiring only: settings, database, migrations (``prepare``), templates, adapters, the servicer,
and the dispatcher thread (started in ``on_serving`` when NOTIFY_JOBS is on, stopped after the
server drains).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc

from infusion.notify.v1 import notify_pb2, notify_pb2_grpc
from services.common.audit.store import AuditStore
from services.common.audit.trail import AuditTrail
from services.common.auth.service import ServiceAuth
from services.common.clock import Clock, SystemClock
from services.common.crud import Mutations
from services.common.db import Database
from services.common.idempotency import IdempotencyStore
from services.common.migrations import upgrade
from services.common.server import GrpcService, serve
from services.notify.adapters.channels import Adapter, adapters_for
from services.notify.api.servicer import NotifyServicer
from services.notify.api.stream import EventSignal, EventStreams, EventWatcher
from services.notify.domain.model import Channel
from services.notify.domain.templates import Templates
from services.notify.settings import NotifySettings, load_settings
from services.notify.store.models import audit_tables, idempotency_keys
from services.notify.usecases.dispatcher import Dispatcher, DispatchPolicy
from services.notify.usecases.events import EventLog
from services.notify.usecases.notifications import Notifications
from services.notify.usecases.subscribers import Subscribers

SERVICE_NAME = notify_pb2.DESCRIPTOR.services_by_name["NotifyService"].full_name


@dataclass
class Notify:
    """The assembled service; tests reach the dispatcher and database through it."""

    service: GrpcService
    api: NotifyServicer
    dispatcher: Dispatcher
    db: Database
    settings: NotifySettings


def assemble(
    settings: NotifySettings,
    clock: Clock | None = None,
    adapters: Mapping[Channel, Adapter] | None = None,
    auth: ServiceAuth | None = None,
) -> Notify:
    """``auth`` defaults to the token settings (in-process tests pass their issuer's)."""
    clock = clock or SystemClock()
    auth = auth or ServiceAuth.from_settings(settings, calls_peers=False)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    audit = AuditTrail(
        "notify", db, AuditStore("notify", audit_tables), clock, settings.audit_linker
    )
    templates = Templates(directory=settings.template_dir or None)
    signal = EventSignal()
    dispatcher = Dispatcher(
        db,
        clock,
        adapters if adapters is not None else adapters_for(settings),
        DispatchPolicy(
            batch_size=settings.dispatch_batch,
            workers=settings.dispatch_workers,
            max_attempts=settings.max_attempts,
            retry_base=dt.timedelta(seconds=settings.retry_base_seconds),
            retry_max=dt.timedelta(seconds=settings.retry_max_seconds),
            lease=dt.timedelta(seconds=settings.lease_seconds),
            interval_seconds=settings.dispatch_interval_seconds,
        ),
    )
    events = EventLog(db)
    streams = EventStreams(
        events,
        signal,
        heartbeat_seconds=settings.heartbeat_seconds,
        idle_seconds=settings.stream_idle_seconds,
        clock_now=clock.now,
    )
    api = NotifyServicer(
        Subscribers(db, clock, settings.webhook_allow()),
        Notifications(db, clock, templates),
        events,
        Mutations(IdempotencyStore(db, idempotency_keys, clock), "notify"),
        streams,
        on_publish=dispatcher.wake,
    )

    def register(server: grpc.Server) -> Sequence[str]:
        notify_pb2_grpc.add_NotifyServiceServicer_to_server(api, server)
        return [SERVICE_NAME]

    watcher = EventWatcher(events.poll, signal, settings.stream_poll_seconds)

    def serving() -> None:
        events.place()  # any event a stopped process wrote but never placed
        watcher.start()
        if settings.jobs:
            dispatcher.start()

    def stopped() -> None:
        streams.close()
        watcher.stop()
        dispatcher.stop()
        db.dispose()

    service = GrpcService(
        settings=settings,
        register=register,
        auth=auth,
        audit=audit,
        prepare=lambda: upgrade("notify", db.engine),
        on_serving=serving,
        on_draining=streams.close,
        on_stopped=stopped,
    )
    return Notify(service, api, dispatcher, db, settings)


def build(settings: NotifySettings, clock: Clock | None = None) -> GrpcService:
    return assemble(settings, clock).service


if __name__ == "__main__":
    raise SystemExit(serve(load_settings, build))
