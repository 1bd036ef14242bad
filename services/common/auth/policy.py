"""What each RPC requires, read from the protos: the ``infusion.auth.v1.policy`` option every
method declares (protos/infusion/auth/v1/auth.proto).

The declarations live in the contract, next to each signature, so a new RPC cannot ship
without one: the interceptor refuses a method that has none, and a test walks every method of
every service and fails on the first without a declaration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from infusion.audit.v1 import audit_pb2
from infusion.auth.v1 import auth_pb2
from infusion.inventory.v1 import inventory_pb2
from infusion.notify.v1 import notify_pb2
from infusion.scheduler.v1 import scheduler_pb2

MethodPolicy = auth_pb2.MethodPolicy
AuditKind = auth_pb2.AuditKind
_POLICY: Any = auth_pb2.policy  # the extension (typed as a plain field by the stubs)

# Every service the platform serves (the generated descriptors, not the services' code).
SERVICES: tuple[ServiceDescriptor, ...] = (
    scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"],
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
    notify_pb2.DESCRIPTOR.services_by_name["NotifyService"],
    # served by all three, each from its own trail
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
)

# Answer without a token: load balancers and Kubernetes probe health, and grpcurl / buf curl
# ask reflection what a server offers (reflection can be switched off, <SERVICE>_REFLECTION).
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def service_of(method: str) -> str:
    """``/infusion.scheduler.v1.SchedulerService/CreateSite`` -> the service's full name."""
    return method.lstrip("/").partition("/")[0]


def policy_of(method: str) -> MethodPolicy | None:
    """The declared policy of ``/package.Service/Method``, or None when the method is unknown
    or declares none (both refused)."""
    full_name = method.lstrip("/").replace("/", ".")
    try:
        found = descriptor_pool.Default().FindMethodByName(full_name)
    except KeyError:
        return None
    return declared(found)


def declared(method: MethodDescriptor) -> MethodPolicy | None:
    options = method.GetOptions()
    if not options.HasExtension(_POLICY):
        return None
    policy: MethodPolicy = options.Extensions[_POLICY]
    return policy if policy.permission else None


def methods() -> Iterator[MethodDescriptor]:
    """Every RPC of every service."""
    for service in SERVICES:
        yield from service.methods


def declared_permissions() -> frozenset[str]:
    """Every permission some RPC requires."""
    return frozenset(p.permission for m in methods() if (p := declared(m)) is not None)
