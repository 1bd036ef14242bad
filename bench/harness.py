"""What every benchmark shares: free ports, a development token issuer the services trust (every
call carries a token, as under `make run`), and running the load process against a target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psycopg
from sqlalchemy import create_engine, text

from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.health import wait_serving
from services.issuer.issuer import OPERATOR_ROLES
from services.issuer.local import LocalIssuer
from services.launcher import SERVICES, Endpoint, ServiceProcesses, service_environment
from services.launcher import free_port as free_port  # one way to pick a port, re-exported
from services.launcher import running as launch

ROOT = Path(__file__).resolve().parents[1]
ORG = "bench"  # the organisation the benchmarks' sites and patients belong to
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"  # the benchmarks' PostgreSQL


def seed(env: dict[str, str]) -> None:
    """`make seed` against the inventory database ``env`` names (migrations and catalogue)."""
    subprocess.run(
        [sys.executable, "-m", "services.inventory", "seed"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its descendants (Linux /proc): a service
    running several processes (``<SERVICE>_PROCESSES``) is a parent and its workers, and the
    work is in the workers. CPU per call is steadier than calls/s on a shared machine."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        read = _proc_stat(int(entry.name))
        if read is None:
            continue
        this, (parent, used) = int(entry.name), read
        children.setdefault(parent, []).append(this)
        times[this] = used
    total, pending = 0.0, [pid]
    while pending:
        this = pending.pop()
        total += times.get(this, 0.0)
        pending.extend(children.get(this, ()))
    return total


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """A process's parent and its user + system CPU seconds so far (/proc/<pid>/stat); None
    when it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def conninfo(url: str) -> str:
    """A libpq URL of a SQLAlchemy one (postgresql+psycopg://…), which the benchmarks use."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def database_cpu_seconds(url: str) -> float:
    """User + system CPU time so far of the PostgreSQL backends connected to ``url``'s
    database (:data:`SERVER` runs on this machine, so /proc has them), this query's own
    excepted. A service's pool keeps its connections, so their backends live across a load;
    a backend that ends between two readings takes its time with it (the reading is then
    low, never high)."""
    query = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    with psycopg.connect(conninfo(url)) as c:
        pids = [int(row[0]) for row in c.execute(query).fetchall()]
    reads = (_proc_stat(pid) for pid in pids)
    return sum(read[1] for read in reads if read is not None)


def measured_load(server_pid: int, url: str | None, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``load`` (same arguments after the first two), its result with ``cpu_ms``: the CPU
    milliseconds a call of the server (``server_pid`` and its descendants), of the database's
    backends (``url``; none for a server without one, such as echo) and of the load process.
    On two cores the three share one budget, so a path is bounded by their sum as much as by
    any one of them (docs/benchmarks.md, "the machine's time a call")."""

    def database() -> float:
        return database_cpu_seconds(url) if url is not None else 0.0

    server, database_before = cpu_seconds(server_pid), database()
    result = load(*args, **kwargs)
    result["cpu_ms"] = {
        "server": cpu_ms_per_call(cpu_seconds(server_pid) - server, result),
        "database": cpu_ms_per_call(database() - database_before, result),
        "load": cpu_ms_per_call(float(result.get("cpu_seconds", 0.0)), result),
    }
    return result


def cpu_ms_per_call(cpu_used: float, result: dict[str, Any]) -> float:
    """A service's CPU milliseconds per call over a load (``cpu_used``: its cpu_seconds after
    minus before): divided by every call it answered, the load's warm-up included, which the
    load's ``calls`` leaves out."""
    calls = int(result.get("calls_with_warmup") or result.get("calls") or 0)
    return round(cpu_used * 1000 / max(calls, 1), 2)


@contextmanager
def throwaway_database(label: str) -> Iterator[str]:
    """A database of its own on :data:`SERVER` for one run (``label`` and the pid name it),
    dropped afterwards even while something is still connected."""
    name = f"bench_{label}_{os.getpid()}"
    pg = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run(["createdb", *pg, name], check=True, capture_output=True)
    try:
        yield f"{SERVER}/{name}"
    finally:
        subprocess.run(["dropdb", *pg, "--force", name], check=False, capture_output=True)


def settle(url: str) -> None:
    """VACUUM ANALYZE the database at ``url`` after seeding it: a run then measures its load,
    not autovacuum's first pass over the rows just seeded (which a burst of a thousand
    receipts sets off during the run) nor plans chosen without statistics. A product's lots
    in use were received over months, long vacuumed and analysed."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


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


def wait_port(address: str, timeout: float = 20) -> bool:
    """Whether a gRPC server answers at ``address`` within ``timeout`` (a bare server with no
    health service: the echo, bench/shell_wait.py's shells)."""
    ready = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(ready).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        ready.close()


@contextmanager
def process(
    cmd: list[str],
    address: str,
    env: dict[str, str] | None = None,
    ready: Callable[[str], bool] = wait_serving,
) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` as a process (its output dropped) until the block ends, once ``ready`` says
    it answers at ``address`` (a gRPC health check by default); terminated afterwards."""
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.Popen(
        cmd, env=full, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if not ready(address):
            raise RuntimeError(f"{' '.join(cmd)} did not start on {address}")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def operator_token(issuer: LocalIssuer) -> str:
    """A day unit operator of the bench organisation: every person's role (sites, patients,
    plans, bookings, stock)."""
    return issuer.issuer.user_token(OPERATOR_ROLES, ORG)


def channel(address: str, token: str, own_connection: bool = False) -> grpc.Channel:
    """A channel whose calls carry ``token``; with ``own_connection`` one that does not share
    its HTTP/2 connection with other channels to the address (grpcio shares it otherwise), so
    that a service run as several processes behind SO_REUSEPORT gets calls in each."""
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
    return open_channel(address, None, StaticToken(token), options)


def load(
    address: str,
    method: str,
    payload: bytes | list[bytes],
    seconds: float,
    concurrency: int,
    *,
    unique_field: int = 0,
    token: str = "",
    connections: int = 4,
) -> dict[str, Any]:
    """Run bench.load in its own process; a list of payloads is sent in turn, and
    ``unique_field`` gives every call its own value of that string field (see bench.load);
    every call carries ``token``; the calls go over ``connections`` HTTP/2 connections."""
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
                "--connections",
                str(connections),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def environment(issuer: LocalIssuer, databases: Mapping[str, str], **extra: str) -> dict[str, str]:
    """What the services of a run start with: each on a free port and told its peers'
    addresses (services/launcher.py, as `make demo` does), the databases ``databases`` names
    (service → URL), trusting ``issuer``; ``extra`` on top."""
    endpoints = [Endpoint(name, f"127.0.0.1:{free_port()}") for name in SERVICES]
    env = service_environment(endpoints, {**os.environ, **issuer.service_environment()})
    env.update({f"{name.upper()}_DATABASE_URL": url for name, url in databases.items()})
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@contextmanager
def running(env: Mapping[str, str], names: Sequence[str]) -> Iterator[ServiceProcesses]:
    """The product catalogue seeded (``python -m services.inventory seed``), then the services
    ``names`` started by the launcher with ``env`` (each on its ``<NAME>_LISTEN``), returning
    once each says it is SERVING; stopped (SIGTERM, drained) afterwards. Their output is
    dropped: it would be the benchmark's noise."""
    seed(dict(env))
    endpoints = [Endpoint(name, env[f"{name.upper()}_LISTEN"]) for name in names]
    with (
        open(os.devnull, "wb") as devnull,
        launch(
            ServiceProcesses(endpoints, env, lambda _name, _line: None, lambda _name: devnull)
        ) as processes,
    ):
        yield processes
