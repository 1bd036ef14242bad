"""What every benchmark shares: free ports, and running the load process against a target."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

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
