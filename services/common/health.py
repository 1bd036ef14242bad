"""Client side of grpc.health.v1: wait until a server reports SERVING (used by the e2e tests
and the benchmarks). It cannot tell which process answered: `make run` and `make demo` wait
for their own children's word instead (services/launcher.py)."""

from __future__ import annotations

import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_serving(address: str, service: str = "", timeout: float = 60.0) -> bool:
    """True once ``address`` reports SERVING for ``service`` ("" = the whole server)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
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
