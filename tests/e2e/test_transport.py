"""A service started as a process refuses plaintext off loopback and bad certificate files
with exit status 2 and a message saying what to set, before it listens (docs/security.md,
"Transport")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import Pki, free_port

pytestmark = pytest.mark.e2e

ISSUER = {"AUTH_ISSUER": "http://127.0.0.1:9/issuer", "SCHEDULER_CLIENT_SECRET": "unused"}


def run(service: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    prefix = service.upper()
    return subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env={
            **os.environ,
            **ISSUER,
            f"{prefix}_DATABASE_URL": f"sqlite:///{tmp_path / service}.db",
            f"{prefix}_LISTEN": f"127.0.0.1:{free_port()}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_refusals_exit_2_naming_what_to_set(tmp_path: Path) -> None:
    port = free_port()
    exposed = run("notify", {"NOTIFY_LISTEN": f"0.0.0.0:{port}"}, tmp_path)
    assert exposed.returncode == 2
    assert f"NOTIFY_LISTEN=0.0.0.0:{port} is not a loopback address" in exposed.stderr
    assert "NOTIFY_INSECURE_LISTEN=true" in exposed.stderr
    assert not (tmp_path / "notify.db").exists()  # refused before anything was done

    missing = run(
        "notify",
        {"NOTIFY_TLS_CERT_FILE": str(tmp_path / "no.crt"), "NOTIFY_TLS_KEY_FILE": "no.key"},
        tmp_path,
    )
    assert missing.returncode == 2
    assert f"NOTIFY_TLS_CERT_FILE='{tmp_path / 'no.crt'}': cannot be read" in missing.stderr

    peer = run("scheduler", {"INVENTORY_ADDRESS": "inventory:50052"}, tmp_path)
    assert peer.returncode == 2
    assert "INVENTORY_ADDRESS=inventory:50052 is not a loopback address" in peer.stderr
    assert "SCHEDULER_TLS_CA_FILE" in peer.stderr


def test_the_insecure_switch_and_tls_both_let_it_start(tmp_path: Path) -> None:
    """The same exposed address starts with the explicit switch, or with a certificate
    (stopped right after: started means it reached SERVING and exited 0 on SIGTERM)."""
    pki = Pki.create(tmp_path)
    for label, env in {
        "insecure": {"NOTIFY_INSECURE_LISTEN": "true"},
        "tls": pki.environment(["notify"]),
    }.items():
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.notify"],
            env={
                **os.environ,
                **ISSUER,
                "NOTIFY_DATABASE_URL": f"sqlite:///{tmp_path / label}.db",
                "NOTIFY_LISTEN": f"0.0.0.0:{port}",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "SERVING on" in line:
                    break
            else:
                raise AssertionError(f"{label}: exited {proc.wait()} without serving")
        finally:
            proc.terminate()
            assert proc.wait(30) == 0, label
