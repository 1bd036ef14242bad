"""`make run` (``python -m demo.run``) and `make demo` talk only to the processes they
started: they refuse a taken port (even one where a server answers SERVING to health checks),
stop when a service exits, and Ctrl-C stops everything, each service draining, in seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from services.launcher import (
    SERVICES,
    Endpoint,
    LaunchError,
    ServiceProcesses,
    free_port,
    service_environment,
)
from tests.e2e.make_run import READY, make_run, run_environment, start, stop

pytestmark = pytest.mark.e2e


@pytest.fixture
def stranger() -> Iterator[int]:
    """Another gRPC server on a port, answering SERVING to every health check, with grpc's
    default SO_REUSEPORT: what `make run` used to mistake for its own inventory."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def test_make_run_refuses_a_taken_port_naming_the_variable(tmp_path: Path, stranger: int) -> None:
    env = run_environment(tmp_path, ports={"inventory": stranger})
    done = subprocess.run(
        [sys.executable, "-m", "demo.run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert f"inventory cannot listen on 127.0.0.1:{stranger} (INVENTORY_LISTEN)" in done.stderr
    assert "SERVING on" not in done.stdout  # nothing was started
    assert not (tmp_path / "inventory.db").exists()  # nor seeded


def test_make_demo_refuses_a_taken_port_naming_the_variable(stranger: int) -> None:
    env = run_environment(Path("/nonexistent"), ports={"scheduler": stranger})
    done = subprocess.run(
        [sys.executable, "-m", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"scheduler cannot listen on 127.0.0.1:{stranger} (SCHEDULER_LISTEN)" in done.stderr
    assert "[site]" not in done.stdout


def test_a_service_that_cannot_bind_is_not_mistaken_for_the_stranger_serving_there(
    tmp_path: Path, stranger: int
) -> None:
    """The port is taken after the launcher's check (here: the check is skipped): the service
    exits, and the launcher says so instead of trusting whoever answers on the port."""
    ports = {name: free_port() for name in SERVICES} | {"inventory": stranger}
    endpoints = [Endpoint(name, f"127.0.0.1:{port}") for name, port in ports.items()]
    env = run_environment(tmp_path, ports=ports)
    lines: list[str] = []
    processes = ServiceProcesses(
        endpoints, service_environment(endpoints, env), lambda _s, line: lines.append(line)
    )
    try:
        with pytest.raises(LaunchError, match=r"inventory exited with status 1 before it was"):
            processes.start()
    finally:
        processes.stop()
    assert all(code is not None for code in processes.exited().values())


def test_make_run_stops_when_a_service_fails_to_start(tmp_path: Path) -> None:
    env = run_environment(tmp_path)
    env["SCHEDULER_DATABASE_URL"] = "sqlite:////proc/no-such-directory/scheduler.db"
    launcher = start(env)
    try:
        assert launcher.proc.wait(timeout=180) == 1
    finally:
        stop(launcher)
    assert "make run: scheduler exited with status 1 before it was SERVING" in launcher.output
    assert "(SCHEDULER_LISTEN)" in launcher.output
    assert "All three services are SERVING" not in launcher.output


def test_make_run_stops_when_a_service_exits(tmp_path: Path) -> None:
    with make_run(tmp_path) as launcher:
        notify = next(
            int(pid)
            for pid in Path(f"/proc/{launcher.proc.pid}/task/{launcher.proc.pid}/children")
            .read_text()
            .split()
            if "services.notify" in Path(f"/proc/{pid}/cmdline").read_text()
        )
        os.kill(notify, signal.SIGKILL)
        assert launcher.proc.wait(timeout=30) == 1
        launcher.wait_for("make run: notify exited with status -9 while serving", timeout=10)
        for name in ("scheduler", "inventory"):  # the others were stopped, not left behind
            launcher.wait_for(f"{name} stopped", timeout=10)


def test_ctrl_c_stops_make_run_within_5_s_and_every_service_drains(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: the launcher then also sends
    SIGTERM to each service, so each receives two signals at once (which used to leave one
    service's main thread waiting forever)."""
    with make_run(tmp_path) as launcher:
        started = time.monotonic()
        launcher.interrupt()
        code = launcher.proc.wait(timeout=30)
        took = time.monotonic() - started
    assert took < 5, f"took {took:.1f} s:\n{launcher.output_tail()}"
    assert code == 0
    for name in SERVICES:
        launcher.wait_for(f"{name} received SIG", timeout=1)
        launcher.wait_for(f"{name} stopped", timeout=1)
    assert READY in launcher.output


def test_sigterm_to_make_run_alone_stops_every_service(tmp_path: Path) -> None:
    with make_run(tmp_path) as launcher:
        launcher.proc.send_signal(signal.SIGTERM)
        assert launcher.proc.wait(timeout=15) == 0
    for name in SERVICES:
        launcher.wait_for(f"{name} received SIGTERM: draining", timeout=1)
        launcher.wait_for(f"{name} stopped", timeout=1)
