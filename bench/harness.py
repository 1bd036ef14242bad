"""What every benchmark shares: free ports, and running the load process against a target."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.common.health import wait_serving

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(
    address: str,
    method: str,
    payload: bytes | list[bytes],
    seconds: float,
    concurrency: int,
    *,
    unique_field: int = 0,
) -> dict[str, Any]:
    """Run bench.load in its own process; a list of payloads is sent in turn, and
    ``unique_field`` gives every call its own value of that string field (see bench.load)."""
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
    subprocess.run(
        [sys.executable, "-m", "services.inventory", "seed"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
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
