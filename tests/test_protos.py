"""The contract stays buf-lint clean (STANDARD rules) and generated code is never committed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "node_modules" / ".bin" / "buf"


def test_buf_lint_standard_passes() -> None:
    if not BUF.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("buf is not installed: `make test` installs it from npm")
        pytest.skip("buf not installed (run `make test` or `npm install`)")
    result = subprocess.run([str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = (ROOT / "buf.yaml").read_text()
    assert "STANDARD" in config


def test_generated_code_is_not_tracked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    assert not [f for f in tracked if f.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))]


def test_every_rpc_of_every_service_declares_its_policy() -> None:
    """Deny by default has a twin: nothing ships undeclared. Each method names a permission
    of the form <service>.<resource>.<verb> of its own service, an audit kind and the
    resource type its audit record names."""
    from services.common.auth.policy import SERVICES, AuditKind, declared

    missing, malformed = [], []
    for service in SERVICES:
        own = service.full_name.split(".")[1]  # infusion.<service>.v1.<Name>
        for method in service.methods:
            policy = declared(method)
            if policy is None:
                missing.append(method.full_name)
                continue
            parts = policy.permission.split(".")
            if (
                len(parts) != 3
                or parts[0] != own
                or not all(parts)
                or policy.audit == AuditKind.AUDIT_KIND_UNSPECIFIED
                or not policy.resource_type
            ):
                malformed.append(f"{method.full_name}: {policy}")
    assert missing == []
    assert malformed == []
    # the walk saw every method the protos declare
    written = sum(
        len(re.findall(r"^\s*rpc \w+\(", p.read_text(), re.M))
        for p in (ROOT / "protos" / "infusion").rglob("*.proto")
    )
    assert sum(len(s.methods) for s in SERVICES) == written


def test_the_role_table_in_docs_security_md_is_generated_from_the_protos_and_roles() -> None:
    from services.common.auth.table import current, section

    assert current() == section(), (
        "docs/security.md's role table is stale: run `python -m services.common.auth.table --write`"
    )
