"""The console's way to the three services: one channel to each for the process's life, and
every call made with the signed-in user's own token (``authorization`` metadata per call), so
the services decide what this user may see and do exactly as for any other client. The
console keeps nothing of what it reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.channels import open_channel
from services.console.settings import SERVICES, ConsoleSettings

T = TypeVar("T")


@dataclass
class Backend:
    channels: dict[str, grpc.Channel]
    timeout: float = 10.0

    @classmethod
    def connect(cls, settings: ConsoleSettings) -> Backend:
        channels = {
            name: open_channel(settings.address(name), settings.client_tls(name))
            for name in SERVICES
        }
        return cls(channels, settings.call_timeout_seconds)

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def health(self) -> dict[str, str]:
        """Each service's grpc.health.v1 answer: SERVING, NOT_SERVING, ... or the error."""
        found: dict[str, str] = {}
        for name, channel in self.channels.items():
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=2
                )
                found[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                found[name] = error.code().name if isinstance(error, grpc.Call) else "UNAVAILABLE"
        return found

    def as_user(self, token: str) -> UserCalls:
        return UserCalls(self, token)


class UserCalls:
    """The three services' stubs, each call carrying ``token``."""

    def __init__(self, backend: Backend, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = backend.timeout
        self.scheduler = _Stub(
            scheduler_pb2_grpc.SchedulerServiceStub(backend.channels["scheduler"]), self
        )
        self.inventory = _Stub(
            inventory_pb2_grpc.InventoryServiceStub(backend.channels["inventory"]), self
        )
        self._notify = notify_pb2_grpc.NotifyServiceStub(backend.channels["notify"])
        self.notify = _Stub(self._notify, self)

    def call(self, method: Callable[..., T], request: Any) -> T:
        return method(request, metadata=self._metadata, timeout=self._timeout)

    def subscribe(self, request: Any) -> Any:
        """notify's Subscribe stream as this user, with no deadline (it lasts as long as the
        page listening to it): an iterator of SubscribeResponse that is also the call, whose
        ``cancel()`` ends it."""
        return self._notify.Subscribe(request, metadata=self._metadata)


class _Stub:
    """``stub.Method(request)`` with the user's token and the call deadline."""

    def __init__(self, stub: Any, calls: UserCalls) -> None:
        self._stub = stub
        self._calls = calls

    def __getattr__(self, name: str) -> Callable[[Any], Any]:
        method = getattr(self._stub, name)
        return lambda request: self._calls.call(method, request)


def pages(fetch: Callable[[str], Any], items: str) -> Iterator[Any]:
    """Every item of a paged List call: ``fetch(page_token)`` returns a response whose
    ``items`` field holds the page and ``next_page_token`` the next (empty: done)."""
    token = ""
    while True:
        response = fetch(token)
        yield from getattr(response, items)
        token = response.next_page_token
        if not token:
            return
