"""The shared server bootstrap: health follows start-up and shutdown, in-flight calls drain on
stop, the interceptor maps errors, and idempotency holds under a concurrent retry."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.auth.policy import MethodPolicy
from services.common.auth.service import ServiceAuth
from services.common.auth.tokens import StaticToken
from services.common.errors import FieldViolation, InvalidArgument
from services.common.server import GrpcService
from services.notify.settings import load_settings
from tests.integration.builders import date
from tests.integration.conftest import Platform, request_id
from tests.integration.errors import error_reason, field_violations
from tests.issuer import TestIssuer

SLOW = "/test.Probe/Slow"


def _probe_policy(method: str) -> MethodPolicy | None:
    """The probe's methods need a permission the test operator holds."""
    if method.startswith("/test.Probe/"):
        return MethodPolicy(permission="inventory.products.read")
    return None


def _probe_service(release: threading.Event, issuer: TestIssuer) -> GrpcService:
    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(5)
        return request

    def invalid(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise InvalidArgument([FieldViolation("thing", "is wrong")])

    def crash(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("secret internals")

    def register(server: grpc.Server) -> Sequence[str]:
        handler = grpc.method_handlers_generic_handler(
            "test.Probe",
            {
                "Slow": grpc.unary_unary_rpc_method_handler(slow),
                "Invalid": grpc.unary_unary_rpc_method_handler(invalid),
                "Crash": grpc.unary_unary_rpc_method_handler(crash),
            },
        )
        server.add_generic_rpc_handlers((handler,))
        return ["test.Probe"]

    settings = load_settings({"NOTIFY_LISTEN": "127.0.0.1:0"})
    auth = ServiceAuth("notify", issuer.verifier(), StaticToken(""), policies=_probe_policy)
    return GrpcService(settings=settings, register=register, auth=auth)


def _status(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status)


def test_health_is_not_serving_until_prepare_finishes(issuer: TestIssuer) -> None:
    gate = threading.Event()
    service = _probe_service(threading.Event(), issuer)
    service.prepare = lambda: gate.wait(10)  # stands in for slow migrations
    starter = threading.Thread(target=service.start)
    starter.start()
    try:
        deadline = time.monotonic() + 5
        while service.port == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            assert _status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            gate.set()
            starter.join(5)
            assert _status(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        gate.set()
        starter.join(5)
        service.stop(0)


def test_stop_drains_in_flight_calls(issuer: TestIssuer) -> None:
    release = threading.Event()
    service = _probe_service(release, issuer)
    service.start()
    channel = issuer.channel(service.address)
    slow = channel.unary_unary(SLOW)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(slow, b"payload", timeout=10)
        time.sleep(0.2)  # the call is now inside the handler
        stopper = threading.Thread(target=service.stop, kwargs={"grace": 5})
        stopper.start()
        time.sleep(0.2)
        release.set()
        assert pending.result() == b"payload"  # finished, not cancelled
        stopper.join(10)
    channel.close()


def test_interceptor_maps_domain_errors_and_hides_internals(issuer: TestIssuer) -> None:
    service = _probe_service(threading.Event(), issuer)
    service.start()
    try:
        with issuer.channel(service.address) as channel:
            with pytest.raises(grpc.RpcError) as invalid:
                channel.unary_unary("/test.Probe/Invalid")(b"", timeout=5)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(invalid.value) == ["thing"]
            assert error_reason(invalid.value) == "INVALID_FIELDS"
            with pytest.raises(grpc.RpcError) as crash:
                channel.unary_unary("/test.Probe/Crash")(b"", timeout=5)
            assert crash.value.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in (crash.value.details() or "")
            assert "RuntimeError" not in (crash.value.details() or "")  # nor the class
    finally:
        service.stop(0)


def test_concurrent_retries_of_one_request_create_one_patient(platform: Platform) -> None:
    rid = request_id()
    body = pb.Patient(
        organisation_id="org-1",
        mrn="R-1",
        family_name="Race",
        birth_date=date(1990, 3, 4),
        sex_at_birth=pb.SEX_AT_BIRTH_FEMALE,
    )
    request = pb.CreatePatientRequest(patient=body, request_id=rid)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: platform.scheduler.CreatePatient(request), range(8)))
    assert len({r.patient.id for r in replies}) == 1
    listed = platform.scheduler.ListPatients(pb.ListPatientsRequest(organisation_id="org-1"))
    assert len(listed.patients) == 1
