"""Inventory entry point: ``python -m services.inventory`` serves; ``... seed`` loads the
shipped product catalogue into the database and exits."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc

from infusion.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from services.common.audit.store import AuditStore
from services.common.audit.trail import AuditTrail
from services.common.auth.service import ServiceAuth
from services.common.channels import peer_channel
from services.common.clock import Clock, SystemClock
from services.common.db import Database
from services.common.idempotency import IdempotencyStore
from services.common.jobstore import database_scheduler
from services.common.migrations import upgrade
from services.common.outbox import Outbox
from services.common.server import GrpcService, serve, start_up
from services.inventory.adapters.notify_relay import relay_to_notify
from services.inventory.api.servicer import InventoryServicer
from services.inventory.jobs import InventoryJobs
from services.inventory.seed import seed_catalogue
from services.inventory.settings import InventorySettings, load_settings
from services.inventory.store.models import audit_tables, idempotency_keys, job_table, outbox
from services.inventory.usecases.catalogue import Catalogue
from services.inventory.usecases.costs import Costs
from services.inventory.usecases.outgoing_events import OutgoingEvents
from services.inventory.usecases.planning import Planning
from services.inventory.usecases.reservations import Reservations
from services.inventory.usecases.sites import Sites
from services.inventory.usecases.stock import Stock


def build(
    settings: InventorySettings, clock: Clock | None = None, auth: ServiceAuth | None = None
) -> GrpcService:
    """Wire the inventory; ``auth`` defaults to the token settings (in-process tests pass
    their issuer's)."""
    clock = clock or SystemClock()
    auth = auth or ServiceAuth.from_settings(settings, calls_peers=True)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    audit = AuditTrail(
        "inventory", db, AuditStore("inventory", audit_tables), clock, settings.audit_linker
    )
    catalogue = Catalogue(db, clock)
    sites = Sites(db, clock)
    stock = Stock(db, clock, catalogue, sites)
    events = Outbox(outbox)
    reservations = Reservations(db, clock, catalogue, sites, stock, events)
    planning = Planning(db, clock, catalogue, sites, stock, events)
    api = InventoryServicer(
        idempotency=IdempotencyStore(db, idempotency_keys, clock),
        catalogue=catalogue,
        sites=sites,
        stock=stock,
        reservations=reservations,
        planning=planning,
        orders=planning.orders,
        costs=Costs(db, clock, sites),
        events=OutgoingEvents(db, events),
    )
    jobs = InventoryJobs(
        sites,
        reservations.expiry_check,
        planning.check_reorder,
        database_scheduler(db, job_table),
        refresh_seconds=settings.jobs_interval_seconds,
    )
    notify_channel = peer_channel(settings, "notify", auth.tokens)
    relay = relay_to_notify(db, clock, notify_channel, settings.relay_policy())

    def serving() -> None:
        if settings.jobs:
            jobs.start()
            relay.start()

    def stopped() -> None:
        jobs.shutdown()
        relay.stop()
        notify_channel.close()
        db.dispose()

    def register(server: grpc.Server) -> Sequence[str]:
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(api, server)
        return [inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name]

    return GrpcService(
        settings=settings,
        register=register,
        auth=auth,
        audit=audit,
        prepare=lambda: upgrade("inventory", db.engine),
        on_serving=serving,
        on_stopped=stopped,
    )


def main(argv: Sequence[str]) -> int:
    if not argv:
        return serve(load_settings, build)
    settings = start_up(load_settings)
    if argv[:1] == ["seed"]:
        total, changed = seed_catalogue(settings)
        print(f"product catalogue: {total} products, {changed} created or updated")
        return 0
    if argv[:1] == ["demo"]:  # stocked demo sites for `make run` (after seed); idempotent
        from services.inventory.demo import seed_demo

        demo = seed_demo(settings)
        print(
            f"demo stock: {demo.sites_created} sites, {demo.units_created} storage units, "
            f"{demo.lots_received} of {demo.lots_total} lots, {demo.policies_set} policies added"
        )
        return 0
    print("usage: python -m services.inventory [seed|demo]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
