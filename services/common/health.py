"""Client side of grpc.health.v1: wait until a server reports SERVING (used by the e2e tests
and the benchmarks). It cannot tell which process answered: `make run` and `make demo` wait
for their own children's word instead (services/launcher.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from services.common.tls import ClientTls


def wait_serving(
    address: str, service: str = "", timeout: float = 60.0, tls: ClientTls | None = None
) -> bool:
    """True once ``address`` reports SERVING for ``service`` ("" = the whole server); over
    TLS with ``tls`` (a listener with a certificate, or the plaintext health listener
    without)."""
    deadline = time.monotonic() + timeout
    with _channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return False


def _channel(address: str, tls: ClientTls | None) -> grpc.Channel:
    """Plaintext needs grpcio only: a health check run as its own process every few seconds
    (compose's) should not import the token and TLS machinery (four times the start-up time)."""
    if tls is None:
        return grpc.insecure_channel(address)
    from services.common.channels import open_channel

    return open_channel(address, tls)
