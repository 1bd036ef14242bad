"""The three services in-process on one database, and every RPC of them as a raw call: the
fuzz and memory tests send the same bytes to a stack on SQLite and one on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.notify.v1 import notify_pb2
from infusion.scheduler.v1 import scheduler_pb2
from services.common.clock import FixedClock
from services.notify.__main__ import assemble
from services.notify.domain.model import Channel
from tests.integration.conftest import NOW, running_platform
from tests.integration.notify_conftest import TEST_SETTINGS, Recorder, with_changes

SERVICES = [
    service
    for module in (scheduler_pb2, inv, notify_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
"""Every RPC of the three services, read from their descriptors."""

CALL_TIMEOUT = 30.0


@dataclass
class Stack:
    name: str
    channels: dict[str, grpc.Channel]  # by service full name

    def call(self, method: MethodDescriptor, request: Any) -> grpc.StatusCode:
        """Send the request; the status code it got (a stream: after its first message)."""
        channel = self.channels[method.containing_service.full_name]
        path = f"/{method.containing_service.full_name}/{method.name}"
        payload = request.SerializeToString()
        try:
            if method.server_streaming:
                stream = channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT)
                try:
                    next(iter(stream))
                finally:
                    stream.cancel()
            else:
                channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
            return code
        return grpc.StatusCode.OK


@contextmanager
def running_stack(name: str, database_url: str) -> Iterator[Stack]:
    """Scheduler, inventory (seeded, with stock site "site-1") and notify on one database."""
    with ExitStack() as stack:
        platform = stack.enter_context(running_platform(database_url))
        settings = with_changes(TEST_SETTINGS, database_url=database_url, grpc_workers=8)
        notify = assemble(settings, FixedClock(NOW), {c: Recorder() for c in Channel})
        notify.service.start()
        stack.callback(notify.service.stop, 0)
        notify_channel = stack.enter_context(grpc.insecure_channel(notify.service.address))
        platform.inventory.CreateStockSite(
            inv.CreateStockSiteRequest(
                site=inv.StockSite(id="site-1", display_name="Site 1", time_zone="Europe/London"),
                request_id="fuzz-site-1",
            )
        )
        yield Stack(
            name=name,
            channels={
                "infusion.scheduler.v1.SchedulerService": platform.scheduler_channel,
                "infusion.inventory.v1.InventoryService": platform.inventory_channel,
                "infusion.notify.v1.NotifyService": notify_channel,
            },
        )
