"""Each proto service is served by one servicer class that lists every RPC itself: a reader
finds all of a service's entry points in one file, and no behaviour hides in a mixin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf.descriptor import ServiceDescriptor

from infusion.audit.v1 import audit_pb2, audit_pb2_grpc
from infusion.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2, notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.common.audit.api import AuditServicer
from services.inventory.api.servicer import InventoryServicer
from services.notify.api.servicer import NotifyServicer
from services.scheduler.api.servicer import SchedulerServicer

SERVICERS = [
    (
        SchedulerServicer,
        scheduler_pb2_grpc.SchedulerServiceServicer,
        scheduler_pb2,
        "SchedulerService",
    ),
    (
        InventoryServicer,
        inventory_pb2_grpc.InventoryServiceServicer,
        inventory_pb2,
        "InventoryService",
    ),
    (NotifyServicer, notify_pb2_grpc.NotifyServiceServicer, notify_pb2, "NotifyService"),
    (AuditServicer, audit_pb2_grpc.AuditServiceServicer, audit_pb2, "AuditService"),
]


@pytest.mark.parametrize(
    ("servicer", "generated", "module", "service"),
    SERVICERS,
    ids=[s[3] for s in SERVICERS],
)
def test_one_servicer_per_service_lists_every_rpc_itself(
    servicer: type, generated: type, module: object, service: str
) -> None:
    assert servicer.__bases__ == (generated,), "no base besides the generated servicer"
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[service]  # type: ignore[attr-defined]
    missing = [m.name for m in descriptor.methods if m.name not in vars(servicer)]
    assert missing == [], f"{servicer.__name__} does not define {missing} itself"


ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    # domain/ holds the rules: nothing of the transport, the database or the layers above
    "domain": ("grpc", "sqlalchemy", "infusion.", ".store", ".api", ".usecases", ".adapters"),
    # api/ translates and calls use cases: it never reaches the store's rows
    "api": (".store",),
}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def _names(module: str, banned: str) -> bool:
    """``.store`` bans a package of that name at any depth; ``grpc`` a top-level package."""
    if banned.startswith("."):
        return banned[1:] in module.split(".")
    return module == banned.rstrip(".") or module.startswith(
        banned if banned.endswith(".") else banned + "."
    )


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_the_layers_import_only_what_they_may(layer: str) -> None:
    found = []
    for path in sorted(ROOT.glob(f"services/*/{layer}/**/*.py")):
        for name in _imports(path):
            if any(_names(name, b) for b in FORBIDDEN[layer]):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    assert found == []
