"""A service run as two processes on one port (``SCHEDULER_PROCESSES=2``,
services/common/processes.py): both workers serve calls, each answers health on its own port
and counts its own calls on its own ``/metrics``, the background jobs of both raise each
INFUSION_DUE once, and SIGTERM to the parent stops both."""

from __future__ import annotations

import datetime as dt
import socket
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from demo.centre import load_notify
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as npb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.channels import open_channel
from services.common.health import wait_serving
from services.launcher import free_port
from tests.e2e.harness import Clinic, Fleet, caller_token, holds_within, notifications, query

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PLANS = 6
CHANNELS = 8


def two_free_ports() -> int:
    """A port P with P + 1 free as well (worker i listens on P + i)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def counted(metrics_port: int, prefix: str, label: str = "") -> int:
    """The sum of a counter's samples (names starting ``prefix``, with ``label`` among their
    labels) on one worker's own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(prefix) and label in line
    )


def handled(metrics_port: int) -> int:
    """Calls of SchedulerService this worker completed."""
    service = 'grpc_service="infusion.scheduler.v1.SchedulerService"'
    return counted(metrics_port, "grpc_server_handled_total{", service)


def test_two_scheduler_processes_share_the_port_and_raise_each_due_once(
    postgres_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path)
    metrics, health = two_free_ports(), two_free_ports()
    fleet.env.update(
        INVENTORY_DATABASE_URL=f"sqlite:///{tmp_path / 'inventory.db'}",
        NOTIFY_DATABASE_URL=f"sqlite:///{tmp_path / 'notify.db'}",
        INVENTORY_ADDRESS=fleet.address("inventory"),
        NOTIFY_ADDRESS=fleet.address("notify"),
    )
    fleet.run("services.inventory", "seed")
    try:
        fleet.start("notify")
        fleet.start("inventory")
        load_notify(fleet.address("notify"), fleet.operator)
        fleet.start(
            "scheduler",
            SCHEDULER_DATABASE_URL=postgres_url,
            SCHEDULER_PROCESSES="2",
            SCHEDULER_JOBS_INTERVAL_SECONDS="1",
            SCHEDULER_METRICS_LISTEN=f"127.0.0.1:{metrics}",
            SCHEDULER_HEALTH_LISTEN=f"127.0.0.1:{health}",
        )
        # the parent says it once both workers do
        assert holds_within(lambda: "scheduler SERVING on" in fleet.log("scheduler"), 120)
        assert fleet.log("scheduler").count("scheduler SERVING on") == 1
        # each worker's own health listener
        for port in (health, health + 1):
            assert wait_serving(f"127.0.0.1:{port}", timeout=10), port

        # several connections (a subchannel pool each): the kernel spreads them over both
        token = caller_token(fleet.issuer, "scheduler", fleet.org)

        def connect() -> scheduler_pb2_grpc.SchedulerServiceStub:
            return scheduler_pb2_grpc.SchedulerServiceStub(
                open_channel(
                    fleet.address("scheduler"),
                    None,
                    token,
                    [("grpc.use_local_subchannel_pool", 1)],
                )
            )

        # the kernel picks a worker per connection by a hash: 8 connections all land on one
        # now and then (once in a hundred runs), so more are opened until both have served
        stubs: list[scheduler_pb2_grpc.SchedulerServiceStub] = []
        counts = [0, 0]
        while min(counts) == 0 and len(stubs) < 8 * CHANNELS:
            batch = [connect() for _ in range(CHANNELS)]
            for stub in batch:
                for _ in range(3):
                    stub.ListSites(pb.ListSitesRequest())
            stubs += batch
            counts = [handled(metrics), handled(metrics + 1)]
        assert sum(counts) >= 3 * len(stubs), counts
        assert min(counts) > 0, counts  # both workers served calls

        # both workers run the due scan every second on the one database: once per plan
        stock = inventory_pb2_grpc.InventoryServiceStub(fleet.channel("inventory"))
        clinic = Clinic.open(stubs[0], stock, chairs=2)
        due = dt.date.today() + dt.timedelta(days=3)  # the window is open: due now
        plans = [clinic.add_plan(str(i), due, via=stubs[i % CHANNELS]) for i in range(PLANS)]
        notify = notify_pb2_grpc.NotifyServiceStub(fleet.channel("notify"))

        def notified() -> Counter[str]:
            return Counter(
                n.payload.infusion_due.therapy_plan_id
                for n in notifications(notify, npb.TOPIC_INFUSION_DUE)
            )

        assert holds_within(lambda: len(notified()) == PLANS), notified()
        # both workers ran the jobs all along (so "once" was contested)
        runs = [counted(port, "job_runs_total{") for port in (metrics, metrics + 1)]
        assert min(runs) > 2, runs
        (rows,) = query(
            postgres_url, "SELECT count(*) FROM scheduler_outbox WHERE topic = 'INFUSION_DUE'"
        )
        assert rows[0] == PLANS  # console subscriber only: one row per plan, no patient's
        assert set(notified().values()) == {1}
        assert sorted(notified()) == sorted(p.id for p in plans)
    finally:
        codes = fleet.stop_all()
    assert codes["scheduler"] == 0, fleet.log_tail("scheduler")
    with socket.socket() as probe:  # both workers gone: the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not taken
        probe.bind(("127.0.0.1", fleet.ports["scheduler"]))
