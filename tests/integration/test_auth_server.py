"""The auth interceptor in a real server: health and reflection without a token (reflection
can be switched off), deny by default for a method that declares nothing, the caller set for
unary calls and every step of a stream, UNAVAILABLE when the issuer's keys cannot be had, a
key rotation picked up after one refetch of the key set, and peers called with the calling
service's own token, never the user's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from jwt.exceptions import PyJWKClientConnectionError

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.auth.policy import MethodPolicy
from services.common.auth.roles import Roles
from services.common.auth.service import ServiceAuth
from services.common.auth.tokens import StaticToken
from services.common.auth.verifier import TokenVerifier
from services.common.identity import current_caller
from services.common.server import GrpcService
from services.inventory.__main__ import build as build_inventory
from services.inventory.settings import load_settings as inventory_settings
from services.issuer.memory import InMemoryKeys
from services.notify.settings import load_settings as notify_settings
from tests.auth_tokens import unknown_kid
from tests.integration.builders import (
    date,
    make_patient,
    make_plan,
    measure,
    plan_message,
    site_with_chairs,
)
from tests.integration.conftest import Platform
from tests.issuer import TestIssuer

PROBE = "test.Probe"


@contextmanager
def probe(
    issuer: TestIssuer,
    *,
    declare: bool = True,
    reflection: bool = True,
    verifier: TokenVerifier | None = None,
) -> Iterator[str]:
    """A server with a unary and a streaming method that answer with whom they run as;
    yields its address, stops it afterwards."""

    def whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
        return current_caller().subject.encode()

    def steps(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for step in range(3):
            yield f"{step}:{current_caller().subject}".encode()

    def register(server: grpc.Server) -> Sequence[str]:
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    PROBE,
                    {
                        "WhoAmI": grpc.unary_unary_rpc_method_handler(whoami),
                        "Steps": grpc.unary_stream_rpc_method_handler(steps),
                    },
                ),
            )
        )
        return [PROBE]

    def policies(method: str) -> MethodPolicy | None:
        if declare and method.startswith(f"/{PROBE}/"):
            return MethodPolicy(permission="scheduler.board.read")
        return None

    settings = notify_settings(
        {"NOTIFY_LISTEN": "127.0.0.1:0", "NOTIFY_REFLECTION": "true" if reflection else "false"}
    )
    auth = ServiceAuth("notify", verifier or issuer.verifier(), StaticToken(""), policies=policies)
    service = GrpcService(settings=settings, register=register, auth=auth)
    service.start()
    try:
        yield service.address
    finally:
        service.stop(0)


def test_health_and_reflection_answer_without_a_token(issuer: TestIssuer) -> None:
    with probe(issuer) as address, grpc.insecure_channel(address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"grpc.health.v1.Health", PROBE} <= services
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(f"/{PROBE}/WhoAmI")(b"", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_reflection_can_be_switched_off(issuer: TestIssuer) -> None:
    with probe(issuer, reflection=False) as address, grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as off:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_method_that_declares_no_permission_is_refused_to_everybody(issuer: TestIssuer) -> None:
    with probe(issuer, declare=False) as address, issuer.channel(address) as channel:
        with pytest.raises(grpc.RpcError) as denied:
            channel.unary_unary(f"/{PROBE}/WhoAmI")(b"", timeout=5)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_caller_is_set_for_a_call_and_for_every_step_of_a_stream(issuer: TestIssuer) -> None:
    with probe(issuer) as address:
        with issuer.channel(address) as channel:
            assert channel.unary_unary(f"/{PROBE}/WhoAmI")(b"", timeout=5) == b"test-operator"
            steps = list(channel.unary_stream(f"/{PROBE}/Steps")(b"", timeout=5))
            assert steps == [b"0:test-operator", b"1:test-operator", b"2:test-operator"]
        nurse = issuer.issuer.user_token(["nurse"], "org-1", subject="nurse-7")
        with issuer.channel(address, nurse) as channel:
            assert channel.unary_unary(f"/{PROBE}/WhoAmI")(b"", timeout=5) == b"nurse-7"


def test_no_key_set_to_verify_with_is_unavailable_not_unauthenticated(issuer: TestIssuer) -> None:
    class Down(InMemoryKeys):
        def _download(self) -> object:
            raise PyJWKClientConnectionError("connection refused")

    keys = Down(issuer.issuer, 30.0)
    verifier = TokenVerifier(
        lambda: keys,
        issuer=issuer.issuer.url,
        audience=issuer.issuer.audience,
        leeway_seconds=30,
        roles=Roles.default(),
    )
    with probe(issuer, verifier=verifier) as address, issuer.channel(address) as channel:
        with pytest.raises(grpc.RpcError) as unavailable:
            channel.unary_unary(f"/{PROBE}/WhoAmI")(b"", timeout=5)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def inventory(database_url: str, issuer: TestIssuer) -> Iterator[tuple[GrpcService, ServiceAuth]]:
    settings = inventory_settings(
        {
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_LISTEN": "127.0.0.1:0",
            "INVENTORY_JOBS": "0",
            "INVENTORY_AUDIT_LINKER": "thread",
            "INVENTORY_SHUTDOWN_GRACE_SECONDS": "1",
        }
    )
    auth = issuer.service_auth("inventory", cooldown=0)
    service = build_inventory(settings, auth=auth)
    service.start()
    try:
        yield service, auth
    finally:
        service.stop(0)


def test_a_rotated_key_is_accepted_after_one_refetch_of_the_key_set(
    inventory: tuple[GrpcService, ServiceAuth], issuer: TestIssuer
) -> None:
    service, _ = inventory
    (keys,) = issuer.keys  # the inventory's key set client
    request = inv.ListProductsRequest(page_size=1)

    def list_products(token: str) -> None:
        with issuer.channel(service.address, token) as channel:
            inventory_pb2_grpc.InventoryServiceStub(channel).ListProducts(request, timeout=5)

    for role in ("nurse", "pharmacist", "administrator", "auditor"):
        list_products(issuer.issuer.role_token(role, "org-1"))
    old_token = issuer.issuer.role_token("pharmacist", "org-1")
    assert keys.fetches == 1  # four callers, one fetch: the key set is cached

    issuer.issuer.rotate()
    list_products(issuer.issuer.role_token("pharmacist", "org-1"))  # the new kid
    assert keys.fetches == 2  # exactly one refetch
    list_products(issuer.issuer.role_token("nurse", "org-1"))
    list_products(old_token)  # signed before the rotation: its key is still published
    assert keys.fetches == 2


def test_made_up_key_ids_do_not_hammer_the_issuer(issuer: TestIssuer, database_url: str) -> None:
    keys = InMemoryKeys(issuer.issuer, cooldown=3600)
    verifier = TokenVerifier(
        lambda: keys,
        issuer=issuer.issuer.url,
        audience=issuer.issuer.audience,
        leeway_seconds=30,
        roles=Roles.default(),
    )
    settings = inventory_settings(
        {
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_LISTEN": "127.0.0.1:0",
            "INVENTORY_JOBS": "0",
            "INVENTORY_AUDIT_LINKER": "thread",
        }
    )
    service = build_inventory(settings, auth=ServiceAuth("inventory", verifier, StaticToken("")))
    service.start()
    try:
        with issuer.channel(service.address) as channel:
            stub = inventory_pb2_grpc.InventoryServiceStub(channel)
            stub.ListProducts(inv.ListProductsRequest(page_size=1), timeout=5)
        for _ in range(20):
            with issuer.channel(service.address, unknown_kid(issuer)) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    inventory_pb2_grpc.InventoryServiceStub(channel).ListProducts(
                        inv.ListProductsRequest(), timeout=5
                    )
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert keys.fetches == 1  # within the cooldown, no refetch for unknown kids
    finally:
        service.stop(0)


def test_peers_are_called_with_the_services_own_token_never_the_users(
    platform: Platform, issuer: TestIssuer
) -> None:
    site, _ = site_with_chairs(platform)
    patient = make_patient(platform)
    measure(platform, patient.id, "70", "165")
    issuer.verified.clear()
    # the scheduler asks the inventory for the plan's product, then for the dose's
    plan = make_plan(platform, plan_message(patient.id, site.id, "gammagard-liquid"))
    platform.forget_products()
    platform.scheduler.CalculateDose(
        pb.CalculateDoseRequest(therapy_plan_id=plan.id, dosing_date=date(2026, 12, 1))
    )
    at_inventory = [caller for service, caller in issuer.verified if service == "inventory"]
    at_scheduler = [caller for service, caller in issuer.verified if service == "scheduler"]
    assert {c.subject for c in at_scheduler} == {"test-operator"}
    assert len(at_inventory) >= 2
    assert all(c.subject == "scheduler" and c.kind == "service" for c in at_inventory)
