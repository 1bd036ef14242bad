"""Every RPC of every service, driven by the service descriptors, called with every kind of bad
token and with a valid token of every role, on in-process servers on SQLite and PostgreSQL:

- a bad token (or none) is UNAUTHENTICATED, saying only "authentication required" or
  "invalid token", whatever the method;
- a valid token is PERMISSION_DENIED exactly when the role does not grant the method's
  declared permission; otherwise the call gets past authentication (it may still be refused
  as INVALID_ARGUMENT, NOT_FOUND, ... for an empty request), and is never INTERNAL.

What a role grants is read here from roles.yaml directly, not through the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from services.common.auth.interceptor import BAD_TOKEN, NO_TOKEN
from services.common.auth.policy import SERVICES, declared
from tests.auth_tokens import BAD_TOKENS
from tests.integration.conftest import Platform
from tests.issuer import TestIssuer

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.notify_conftest import Factory, notify_factory  # noqa: E402, F401

ROLES_FILE = Path(__file__).resolve().parents[2] / "services/common/auth/roles.yaml"
SHIPPED = yaml.safe_load(ROLES_FILE.read_text())
EVERYONE = set(SHIPPED["authenticated"])
# a hospital system granted a few scopes, one of them outside what its role may hold
INTEGRATION_SCOPE = (
    "scheduler.patients.read",
    "notify.notifications.subscribe",
    "inventory.costs.read",
)
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@dataclass(frozen=True)
class Who:
    name: str
    token: str
    permissions: frozenset[str]


def callers(issuer: TestIssuer) -> list[Who]:
    """A valid token of every shipped role (and a narrowly scoped hospital system)."""
    found = []
    for role, spec in SHIPPED["roles"].items():
        # a client role's token from the issuer is granted every scope its role allows
        granted = set(spec.get("permissions") or [])
        found.append(
            Who(role, issuer.issuer.role_token(role, "org-1"), frozenset(granted | EVERYONE))
        )
    narrow = set(INTEGRATION_SCOPE) & set(SHIPPED["roles"]["integration"]["permissions"])
    found.append(
        Who(
            "integration with three scopes",
            issuer.issuer.mint(
                "hospital-system",
                roles=["integration"],
                organisation="org-1",
                scope=" ".join(INTEGRATION_SCOPE),
            ),
            frozenset(narrow | EVERYONE),
        )
    )
    return found


def call(
    channel: grpc.Channel, service: ServiceDescriptor, method: MethodDescriptor, token: str | None
) -> grpc.StatusCode:
    """The status of one call of ``method`` with an empty request (OK when it answered)."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{service.full_name}/{method.name}"
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    kwargs: dict[str, Any] = {
        "request_serializer": request_class.SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    try:
        if method.server_streaming:
            responses = channel.unary_stream(path, **kwargs)(
                request_class(), metadata=metadata, timeout=5
            )
            try:
                next(responses)  # a first event or heartbeat: the stream was let in
            finally:
                responses.cancel()
        else:
            channel.unary_unary(path, **kwargs)(request_class(), metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        if error.code() in DENIED:
            assert (
                error.details() in (NO_TOKEN, BAD_TOKEN)
                or error.code() == grpc.StatusCode.PERMISSION_DENIED
            ), error.details()
        return error.code()
    return grpc.StatusCode.OK


def test_every_rpc_refuses_bad_tokens_and_enforces_each_role(
    platform: Platform,
    issuer: TestIssuer,
    notify_factory: Factory,  # noqa: F811
) -> None:
    notify = notify_factory()
    addresses = {
        "infusion.scheduler.v1.SchedulerService": platform.scheduler_address,
        "infusion.inventory.v1.InventoryService": platform.inventory_address,
        "infusion.notify.v1.NotifyService": notify.address,
        # every service serves the audit trail (of its own); the scheduler's answers here
        "infusion.audit.v1.AuditService": platform.scheduler_address,
    }
    bad = {name: make(issuer) for name, make in BAD_TOKENS.items()}
    who = callers(issuer)
    wrong: list[str] = []
    calls = 0
    for service in SERVICES:
        with grpc.insecure_channel(addresses[service.full_name]) as channel:
            for method in service.methods:
                policy = declared(method)
                assert policy is not None, method.full_name
                for name, token in bad.items():
                    code = call(channel, service, method, token)
                    calls += 1
                    if code != grpc.StatusCode.UNAUTHENTICATED:
                        wrong.append(f"{method.name} with {name}: {code.name}")
                for caller in who:
                    code = call(channel, service, method, caller.token)
                    calls += 1
                    allowed = policy.permission in caller.permissions
                    if allowed and code in DENIED | {
                        grpc.StatusCode.INTERNAL,
                        grpc.StatusCode.UNKNOWN,
                    }:
                        wrong.append(f"{method.name} as {caller.name}: {code.name}, should pass")
                    if not allowed and code != grpc.StatusCode.PERMISSION_DENIED:
                        wrong.append(
                            f"{method.name} as {caller.name}: {code.name}, should be denied"
                        )
    assert wrong == []
    assert calls == sum(len(s.methods) for s in SERVICES) * (len(bad) + len(who))
