"""`make run`: seed the catalogue and the demo stock, start the development token issuer and
the three services as processes, wait for SERVING, print a token per role and how to call
them, and stop them all on Ctrl-C (SIGTERM each, so in-flight calls drain)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

from services import demo
from services.common.auth.roles import Roles
from services.common.auth.tokens import StaticToken
from services.common.health import wait_serving
from services.common.settings import ServiceSettings, SettingsError
from services.inventory.settings import load_settings as inventory_settings
from services.issuer.issuer import OPERATOR_ROLES
from services.issuer.local import LocalIssuer
from services.notify.settings import load_settings as notify_settings
from services.scheduler.settings import load_settings as scheduler_settings

SERVICES = ("inventory", "notify", "scheduler")


def main() -> int:
    # the services trust the development issuer (var/issuer/) and get their own tokens there
    issuer = LocalIssuer()
    env = {**os.environ, **issuer.service_environment()}
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
        issuer.stop()

    def on_sigterm(*_: object) -> None:
        stop_all()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        issuer.start()
        for name in SERVICES:
            procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env)
        for name in SERVICES:
            address = settings[name].listen
            if not wait_serving(address):
                print(f"{name} did not become SERVING on {address}", file=sys.stderr)
                stop_all()
                return 1
        s, i, n = (settings[x].listen for x in ("scheduler", "inventory", "notify"))
        operator = StaticToken(issuer.issuer.user_token(OPERATOR_ROLES))
        for line in demo.load(s, i, dt.date.today(), notify_address=n, tokens=operator):
            print(line, flush=True)
        tokens = "\n".join(
            f"export {role.upper()}='{issuer.token(role)}'" for role in Roles.default().specs
        )
        bearer = '-H "authorization: Bearer $'
        print(
            f"""
All three services are SERVING (SQLite under var/), trusting the development issuer at
{issuer.url} (keys under var/issuer/). A token per role, of organisation {demo.ORG} and every
site, valid 8 hours (`make token ROLE=<role> [ORG=<organisation>]` prints a fresh one):

{tokens}

  scheduler  {s}
  inventory  {i}
  notify     {n}

Try them (paste the exports above first; grpcurl, or `npx buf curl`). Every call needs a
token; reflection (`list`, `describe`) and health do not:
  grpcurl -plaintext {i} list
  grpcurl -plaintext {bearer}PHARMACIST" -d '{{"page_size": 5}}' {i} \\
    infusion.inventory.v1.InventoryService/ListProducts
  grpcurl -plaintext {s} describe infusion.scheduler.v1.SchedulerService
  grpcurl -plaintext {bearer}SCHEDULING_COORDINATOR" \\
    -d '{{"organisation_id": "{demo.ORG}"}}' {s} infusion.scheduler.v1.SchedulerService/ListSites
  grpcurl -plaintext {bearer}SCHEDULING_COORDINATOR" \\
    -d '{{"site_id": "<site id>", "horizon_days": 28, "mode": "PLAN_MODE_PROPOSE"}}' \\
    {s} infusion.scheduler.v1.SchedulerService/PlanSchedule
  grpcurl -plaintext {bearer}PHARMACIST" -d '{{"site_id": "demo-london"}}' {i} \\
    infusion.inventory.v1.InventoryService/GetStockLevels
  npx buf curl --protocol grpc --http2-prior-knowledge {bearer}PHARMACIST" \\
    http://{i}/infusion.inventory.v1.InventoryService/ListProducts
A nurse may not change the catalogue (PERMISSION_DENIED); no token is UNAUTHENTICATED:
  grpcurl -plaintext {bearer}NURSE" -d '{{"product": {{"id": "x"}}}}' {i} \\
    infusion.inventory.v1.InventoryService/UpdateProduct
See README.md for a walk-through (site, patient, plan, CalculateDose, booking, stock) and
docs/security.md for roles and tokens.
Notifications print here as "[notify] console to ...": the scheduler's due notices, reminders
and missed infusions (its jobs run every minute), and the inventory's stock alerts. A hospital
system (the integration role) reads them:
  grpcurl -plaintext {bearer}INTEGRATION" -d '{{"page_size": 5}}' {n} \\
    infusion.notify.v1.NotifyService/ListNotifications
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
