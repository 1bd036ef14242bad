"""What every benchmark shares: free ports, a development token issuer the services trust (every
call carries a token, as under `make run`), and running the load process against a target."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.health import wait_serving
from services.issuer.issuer import OPERATOR_ROLES
from services.issuer.local import LocalIssuer
from services.launcher import free_port as free_port  # one way to pick a port, re-exported

ROOT = Path(__file__).resolve().parents[1]
ORG = "bench"  # the organisation the benchmarks' sites and patients belong to


def seed(env: dict[str, str]) -> None:
    """`make seed` against the inventory database ``env`` names (migrations and catalogue)."""
    subprocess.run(
        [sys.executable, "-m", "services.inventory", "seed"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


@contextmanager
def dev_issuer() -> Iterator[LocalIssuer]:
    """A development issuer of the run's own (keys in a temporary directory, a free port)."""
    with tempfile.TemporaryDirectory() as keys:
        issuer = LocalIssuer(Path(keys), f"127.0.0.1:{free_port()}")
        issuer.start(subprocess.DEVNULL)
        try:
            yield issuer
        finally:
            issuer.stop()


def operator_token(issuer: LocalIssuer) -> str:
    """A day unit operator of the bench organisation: every person's role (sites, patients,
    plans, bookings, stock)."""
    return issuer.issuer.user_token(OPERATOR_ROLES, ORG)


def channel(address: str, token: str) -> grpc.Channel:
    return open_channel(address, None, StaticToken(token))


def load(
    address: str,
    method: str,
    payload: bytes | list[bytes],
    seconds: float,
    concurrency: int,
    *,
    unique_field: int = 0,
    token: str = "",
) -> dict[str, Any]:
    """Run bench.load in its own process; a list of payloads is sent in turn, and
    ``unique_field`` gives every call its own value of that string field (see bench.load);
    every call carries ``token``."""
    with tempfile.NamedTemporaryFile("w", suffix=".hex") as listing:
        if isinstance(payload, list):
            listing.write("\n".join(p.hex() for p in payload))
            listing.flush()
            request = f"@{listing.name}"
        else:
            request = payload.hex()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.load",
                address,
                method,
                request,
                "--seconds",
                str(seconds),
                "--concurrency",
                str(concurrency),
                "--unique-field",
                str(unique_field),
                "--token",
                token,
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@contextmanager
def running(
    env: Mapping[str, str], names: Sequence[str]
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """The product catalogue seeded (``python -m services.inventory seed``), then the services
    ``names`` as processes with ``env``, each waited on until SERVING at its ``<NAME>_LISTEN``;
    terminated (and waited for) afterwards."""
    seed(dict(env))
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in names
    }
    try:
        for name in names:
            address = env[f"{name.upper()}_LISTEN"]
            if not wait_serving(address):
                raise RuntimeError(f"{name} did not become SERVING on {address}")
        yield procs
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
