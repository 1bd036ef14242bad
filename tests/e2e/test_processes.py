"""The three services as separate processes, started the way `make run` starts them (with a
development token issuer): each reaches SERVING, answers reflection (what grpcurl and buf
curl use) without a token, for its services and for the google.rpc error detail types, serves
a caller holding a `make token` token and refuses one without, and stops cleanly on SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.health import wait_serving
from services.common.server import ERROR_DETAIL_FILES
from services.common.settings import REPO_ROOT
from services.issuer.local import LocalIssuer
from tests.e2e.harness import free_port, start_issuer

pytestmark = pytest.mark.e2e

SERVICES = {
    "scheduler": "infusion.scheduler.v1.SchedulerService",
    "inventory": "infusion.inventory.v1.InventoryService",
    "notify": "infusion.notify.v1.NotifyService",
}


@dataclass
class System:
    addresses: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]
    issuer: LocalIssuer


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    var = tmp_path_factory.mktemp("var")
    ports = {name: free_port() for name in SERVICES}
    issuer = start_issuer(Path(var))
    env = {**os.environ, **issuer.service_environment()}
    for name, port in ports.items():
        env[f"{name.upper()}_LISTEN"] = f"127.0.0.1:{port}"
        env[f"{name.upper()}_ADDRESS"] = f"127.0.0.1:{port}"
        env[f"{name.upper()}_DATABASE_URL"] = f"sqlite:///{Path(var) / name}.db"
    subprocess.run(
        [sys.executable, "-m", "services.inventory", "seed"],
        env=env,
        check=True,
        capture_output=True,
    )
    # Output goes to files: a pipe nobody reads fills up (64 KiB of logs) and blocks the
    # service on its next log line, which would look like a service that cannot shut down.
    logs = {name: (Path(var) / f"{name}.log").open("wb") for name in SERVICES}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=env,
            stdout=logs[name],
            stderr=subprocess.STDOUT,
        )
        for name in SERVICES
    }
    try:
        yield System(
            {name: f"127.0.0.1:{port}" for name, port in ports.items()},
            procs,
            {name: Path(var) / f"{name}.log" for name in SERVICES},
            issuer,
        )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()
        issuer.stop()


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_is_serving_with_reflection(system: System, name: str) -> None:
    address = system.addresses[name]
    assert wait_serving(address)
    with grpc.insecure_channel(address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    expected = SERVICES[name]
    if expected:
        assert expected in services
        assert wait_serving(address, expected)


def make_token(system: System, role: str) -> str:
    """What `make token ROLE=<role>` prints as its last line (the same command)."""
    directory = str(system.issuer.directory)
    printed = subprocess.run(
        [sys.executable, "-m", "services.issuer", "--dir", directory, "token", role],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return printed.strip().splitlines()[-1]


def test_inventory_process_serves_the_seeded_catalogue(system: System) -> None:
    assert wait_serving(system.addresses["inventory"])
    token = StaticToken(make_token(system, "pharmacist"))
    with open_channel(system.addresses["inventory"], None, token) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        product = stub.GetProduct(inv.GetProductRequest(id="privigen"), timeout=5).product
    # docs/clinical-rules.md#products: Privigen 10 %, 2.5/5/10/20/40 g [R30]
    assert product.concentration_percent == "10"
    assert [p.grams for p in product.presentations] == ["2.5", "5", "10", "20", "40"]


ERROR_DETAIL_TYPES = (
    "google.rpc.Status",
    "google.rpc.BadRequest",
    "google.rpc.PreconditionFailure",
    "google.rpc.ResourceInfo",
    "google.rpc.ErrorInfo",
)
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"


@pytest.mark.parametrize("name", list(SERVICES))
def test_reflection_serves_the_error_detail_types(system: System, name: str) -> None:
    """What `grpcurl describe google.rpc.BadRequest` asks: the file holding each symbol. In a
    service's own process the pool holds only what the service imported."""
    assert wait_serving(system.addresses[name])
    with grpc.insecure_channel(system.addresses[name]) as channel:
        reflected = ProtoReflectionDescriptorDatabase(channel)
        for symbol in ERROR_DETAIL_TYPES:
            file = reflected.FindFileContainingSymbol(symbol)
            assert file.name in {f.name for f in ERROR_DETAIL_FILES}
            assert symbol.rsplit(".", 1)[1] in {m.name for m in file.message_type}


def _decode(channel: grpc.Channel, type_name: str, value: bytes) -> dict[str, object]:
    """A detail decoded as grpcurl does it: with descriptors from the server's reflection
    only (a fresh pool, not this process's generated classes)."""
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    message: Message = message_factory.GetMessageClass(pool.FindMessageTypeByName(type_name))()
    message.ParseFromString(value)
    return json_format.MessageToDict(message)


def test_error_details_decode_with_reflection_alone(system: System) -> None:
    address = system.addresses["inventory"]
    assert wait_serving(address)
    administrator = StaticToken(make_token(system, "administrator"))
    with open_channel(address, None, administrator) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateProduct(inv.CreateProductRequest(product=inv.Product()), timeout=5)
        status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
        assert status is not None
        details: list[Any] = list(status.details)
        decoded = {d.TypeName(): _decode(channel, d.TypeName(), d.value) for d in details}
    assert set(decoded) == {"google.rpc.BadRequest", "google.rpc.ErrorInfo"}
    violations = decoded["google.rpc.BadRequest"]["fieldViolations"]
    assert isinstance(violations, list) and violations
    info = decoded["google.rpc.ErrorInfo"]
    assert info["reason"] == "INVALID_FIELDS"
    assert info["metadata"] == {
        "fields": ",".join(v["field"] for v in violations),
        "field_count": str(len(violations)),
    }


@pytest.mark.skipif(not BUF.exists(), reason="buf is installed by `make lint` / `make test`")
def test_buf_curl_error_details_decode_with_the_servers_reflection(system: System) -> None:
    """buf curl finds the method by reflection and prints a failed call's details as type and
    base64 value: it decodes a detail only when buf itself was built with its type, which the
    google.rpc error details are not. The values it prints decode with reflection alone."""
    address = system.addresses["inventory"]
    assert wait_serving(address)
    done = subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol=grpc",
            "--http2-prior-knowledge",
            "-H",
            f"authorization: Bearer {make_token(system, 'pharmacist')}",
            "--data",
            '{"id": "no-such-product"}',
            f"http://{address}/infusion.inventory.v1.InventoryService/GetProduct",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 5 * 8, done.stderr  # buf curl exits with the gRPC code × 8
    error = json.loads(done.stderr)
    assert error["code"] == "not_found"
    with grpc.insecure_channel(address) as channel:
        decoded = {
            d["type"]: _decode(channel, d["type"], base64.b64decode(d["value"] + "=="))
            for d in error["details"]
        }
    assert decoded["google.rpc.ResourceInfo"]["resourceType"] == "product"
    info = decoded["google.rpc.ErrorInfo"]
    assert info["reason"] == "RESOURCE_NOT_FOUND"
    assert info["metadata"] == {"resource_type": "product"}


def test_a_call_without_a_token_or_the_permission_is_refused(system: System) -> None:
    request = inv.UpdateProductRequest(product=inv.Product(id="privigen"))
    address = system.addresses["inventory"]
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as anonymous:
        inventory_pb2_grpc.InventoryServiceStub(channel).UpdateProduct(request, timeout=5)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    nurse = StaticToken(make_token(system, "nurse"))
    with open_channel(address, None, nurse) as channel, pytest.raises(grpc.RpcError) as denied:
        inventory_pb2_grpc.InventoryServiceStub(channel).UpdateProduct(request, timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_sigterm_drains_and_exits_cleanly(system: System) -> None:
    procs = system.procs
    for name in SERVICES:
        assert wait_serving(system.addresses[name])
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)
    for name, proc in procs.items():
        assert proc.wait(timeout=20) == 0, name
        output = system.logs[name].read_text(errors="replace")
        assert "received SIGTERM: draining" in output and f"{name} stopped" in output
