"""`make run`: seed the catalogue and the demo stock, start the three services as processes,
wait for SERVING, print how to call them, and stop them all on Ctrl-C (SIGTERM each, so
in-flight calls drain)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

from services import demo
from services.common.health import wait_serving
from services.common.settings import ServiceSettings, SettingsError
from services.inventory.settings import load_settings as inventory_settings
from services.notify.settings import load_settings as notify_settings
from services.scheduler.settings import load_settings as scheduler_settings

SERVICES = ("inventory", "notify", "scheduler")


def main() -> int:
    env = dict(os.environ)
    try:  # every service's settings, checked before anything starts
        settings: dict[str, ServiceSettings] = {
            "scheduler": scheduler_settings(env),
            "inventory": inventory_settings(env),
            "notify": notify_settings(env),
        }
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    for step in ("seed", "demo"):  # the catalogue, then demo sites stocked with lots
        seed = subprocess.run([sys.executable, "-m", "services.inventory", step], env=env)
        if seed.returncode != 0:
            return seed.returncode
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def stop_all(*_: object) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def on_sigterm(*_: object) -> None:
        stop_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for name in SERVICES:
            procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env)
        for name in SERVICES:
            address = settings[name].listen
            if not wait_serving(address):
                print(f"{name} did not become SERVING on {address}", file=sys.stderr)
                stop_all()
                return 1
        s, i, n = (settings[x].listen for x in ("scheduler", "inventory", "notify"))
        for line in demo.load(s, i, dt.date.today(), notify_address=n):
            print(line, flush=True)
        print(
            f"""
All three services are SERVING (SQLite under var/):
  scheduler  {s}
  inventory  {i}
  notify     {n}

Try them (grpcurl, or `npx buf curl`; reflection is on):
  grpcurl -plaintext {i} list
  grpcurl -plaintext -d '{{"page_size": 5}}' {i} infusion.inventory.v1.InventoryService/ListProducts
  grpcurl -plaintext {s} describe infusion.scheduler.v1.SchedulerService
  grpcurl -plaintext -d '{{"organisation_id": "demo-org"}}' {s} \\
    infusion.scheduler.v1.SchedulerService/ListSites
  grpcurl -plaintext \\
    -d '{{"site_id": "<site id>", "horizon_days": 28, "mode": "PLAN_MODE_PROPOSE"}}' \\
    {s} infusion.scheduler.v1.SchedulerService/PlanSchedule
  grpcurl -plaintext -d '{{"site_id": "demo-london"}}' {i} \\
    infusion.inventory.v1.InventoryService/GetStockLevels
  npx buf curl --protocol grpc --http2-prior-knowledge \\
    http://{i}/infusion.inventory.v1.InventoryService/ListProducts
See README.md for a walk-through (site, patient, plan, CalculateDose, booking, stock).
Notifications print here as "[notify] console to ...": the scheduler's due notices, reminders
and missed infusions (its jobs run every minute), and the inventory's stock alerts.
  grpcurl -plaintext -d '{{"page_size": 5}}' {n} infusion.notify.v1.NotifyService/ListNotifications
Ctrl-C stops them.
""",
            flush=True,
        )
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [name for name, p in procs.items() if p.poll() is not None]
        print(f"stopped unexpectedly: {', '.join(dead)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
