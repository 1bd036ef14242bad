"""`make run`: seed the catalogue and the demo stock, start the three services as processes on
the ports their ``<SERVICE>_LISTEN`` variables give (refusing to start when a port is taken,
and knowing each one serving is its own child: services/launcher.py), load the demo centre,
print how to call them, and stop them all on Ctrl-C or SIGTERM (SIGTERM each, so in-flight
calls drain) or when one of them exits."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import grpc

from services import demo
from services.common.signals import SignalWaiter
from services.launcher import (
    LaunchError,
    ServiceProcesses,
    check_settings,
    endpoints_from_environment,
    running,
    service_environment,
)


def main() -> int:
    with SignalWaiter() as signals:
        try:
            return _run(signals)
        except LaunchError as e:
            if signals.received is not None:  # a child stopped because of the Ctrl-C
                return 0
            print(f"make run: {e}", file=sys.stderr, flush=True)
            return 1


def _run(signals: SignalWaiter) -> int:
    endpoints = endpoints_from_environment()
    env = service_environment(endpoints)
    check_settings(env)
    processes = ServiceProcesses(endpoints, env, sink=_print, on_exit=signals.wake)
    processes.check_ports()  # before seeding: refuse at once, not after a minute of work
    for step in ("seed", "demo"):  # the catalogue, then demo sites stocked with lots
        seed = subprocess.run([sys.executable, "-m", "services.inventory", step], env=env)
        if signals.received is not None:
            return 0
        if seed.returncode != 0:
            return seed.returncode
    with running(processes):
        if signals.received is not None:  # asked to stop while they were starting
            return 0
        s, i, n = (processes.addresses[x] for x in ("scheduler", "inventory", "notify"))
        try:
            for line in demo.load(s, i, dt.date.today(), notify_address=n):
                print(line, flush=True)
        except grpc.RpcError as e:
            if signals.received is not None:
                return 0
            processes.check_alive()  # a child that died says more than its peer's error
            print(f"make run: loading the demo centre failed: {e}", file=sys.stderr, flush=True)
            return 1
        print(BANNER.format(s=s, i=i, n=n), flush=True)
        while signals.wait() is None:  # woken by a signal, or by a child's output ending
            processes.check_alive()
    return 0


def _print(service: str, line: str) -> None:
    print(line, flush=True)


BANNER = """
All three services are SERVING:
  scheduler  {s}
  inventory  {i}
  notify     {n}

Call them with buf (installed by `make run` from package.json; reflection is on), from here:
  npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://{i}
  npx buf curl --protocol grpc --http2-prior-knowledge -d '{{"page_size": 5}}' \\
    http://{i}/infusion.inventory.v1.InventoryService/ListProducts
  npx buf curl --protocol grpc --http2-prior-knowledge -d '{{"organisation_id": "demo-org"}}' \\
    http://{s}/infusion.scheduler.v1.SchedulerService/ListSites
  npx buf curl --protocol grpc --http2-prior-knowledge -d '{{"site_id": "demo-london"}}' \\
    http://{i}/infusion.inventory.v1.InventoryService/GetStockLevels
  npx buf curl --protocol grpc --http2-prior-knowledge -d '{{"page_size": 5}}' \\
    http://{n}/infusion.notify.v1.NotifyService/ListNotifications
README.md ("Calling the services") books an infusion from Python and shows grpcurl.
Notifications print here as "[notify] console to ...": the scheduler's due notices, reminders
and missed infusions (its jobs run every minute), and the inventory's stock alerts.
Ctrl-C stops them.
"""


if __name__ == "__main__":
    raise SystemExit(main())
