"""Settings from the environment, read once at start-up.

Every service reads the same shape of settings, prefixed by its name, so one page of docs
(README "Configuration") covers all three: ``SCHEDULER_DATABASE_URL``, ``INVENTORY_LISTEN``,
``NOTIFY_GRPC_WORKERS`` and so on. Peers are addressed as ``<PEER>_ADDRESS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORTS = {"scheduler": 50051, "inventory": 50052, "notify": 50053}
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    service: str
    database_url: str
    listen: str
    grpc_workers: int
    db_pool_size: int
    shutdown_grace_seconds: float
    peers: Mapping[str, str]
    # jobs: run this service's background jobs (APScheduler); off in in-process tests, which
    # call the job bodies with an injected clock instead.
    jobs: bool = True

    def peer(self, name: str) -> str:
        """The address of another service (``INVENTORY_ADDRESS`` etc.)."""
        return self.peers[name]


def default_database_url(service: str) -> str:
    var = REPO_ROOT / "var"
    return f"sqlite:///{var / f'{service}.db'}"


def load_settings(service: str, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    prefix = service.upper()
    peers = {
        name: env.get(f"{name.upper()}_ADDRESS", f"127.0.0.1:{port}")
        for name, port in DEFAULT_PORTS.items()
        if name != service
    }
    return Settings(
        service=service,
        database_url=env.get(f"{prefix}_DATABASE_URL", default_database_url(service)),
        listen=env.get(f"{prefix}_LISTEN", f"127.0.0.1:{DEFAULT_PORTS[service]}"),
        grpc_workers=int(env.get(f"{prefix}_GRPC_WORKERS", "16")),
        db_pool_size=int(env.get(f"{prefix}_DB_POOL_SIZE", "10")),
        shutdown_grace_seconds=float(env.get(f"{prefix}_SHUTDOWN_GRACE_SECONDS", "10")),
        peers=peers,
        jobs=env.get(f"{prefix}_JOBS", "1").lower() not in {"0", "false", "no"},
    )
