"""`make run`: seed the catalogue and the demo stock, start the development token issuer and
the three services as processes on the ports their ``<SERVICE>_LISTEN`` variables give
(refusing to start when a port is taken, and knowing each one serving is its own child:
services/launcher.py), load the demo centre, start the staff console (``CONSOLE_LISTEN``,
default 127.0.0.1:8080, docs/console.md), print its URL, a token per role and how to call
them, and stop them all on Ctrl-C or SIGTERM (SIGTERM each, so in-flight calls drain) or when
one of them exits."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import grpc

from demo import centre
from services.common.auth.roles import Roles
from services.common.auth.tokens import StaticToken
from services.common.settings import SettingsError
from services.common.signals import SignalWaiter
from services.console.settings import DEFAULT_LISTEN as CONSOLE_LISTEN
from services.console.settings import load_settings as console_settings
from services.issuer.issuer import OPERATOR_ROLES
from services.issuer.local import LocalIssuer
from services.launcher import (
    Endpoint,
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
    # the services trust the development issuer (var/issuer/) and get their own tokens there
    issuer = LocalIssuer()
    endpoints = endpoints_from_environment()
    env = service_environment(endpoints, {**os.environ, **issuer.service_environment()})
    check_settings(env)
    try:
        console_settings(env)
    except SettingsError as error:
        raise LaunchError(str(error)) from None
    processes = ServiceProcesses(endpoints, env, sink=_print, on_exit=signals.wake)
    # the staff console: a process of its own, started once the services serve
    console = ServiceProcesses(
        [Endpoint("console", env.get("CONSOLE_LISTEN") or CONSOLE_LISTEN)],
        env,
        sink=_print,
        on_exit=signals.wake,
    )
    processes.check_ports()  # before seeding: refuse at once, not after a minute of work
    console.check_ports()
    _check_issuer_port(issuer.listen)
    for step in ("seed", "demo"):  # the catalogue, then demo sites stocked with lots
        seed = subprocess.run([sys.executable, "-m", "services.inventory", step], env=env)
        if signals.received is not None:
            return 0
        if seed.returncode != 0:
            return seed.returncode
    try:
        issuer.start()
    except RuntimeError as e:
        raise LaunchError(str(e)) from None
    with issuer, running(processes):
        if signals.received is not None:  # asked to stop while they were starting
            return 0
        s, i, n = (processes.addresses[x] for x in ("scheduler", "inventory", "notify"))
        operator = StaticToken(issuer.issuer.user_token(OPERATOR_ROLES))
        try:
            for line in centre.load(s, i, dt.date.today(), notify_address=n, tokens=operator):
                print(line, flush=True)
        except grpc.RpcError as e:
            if signals.received is not None:
                return 0
            processes.check_alive()  # a child that died says more than its peer's error
            print(f"make run: loading the demo centre failed: {e}", file=sys.stderr, flush=True)
            return 1
        with running(console):
            if signals.received is not None:
                return 0
            tokens = "\n".join(
                f"export {role.upper()}='{issuer.token(role)}'" for role in Roles.default().specs
            )
            url = f"http://{console.endpoints['console'].address}"
            print(
                BANNER.format(
                    s=s, i=i, n=n, tokens=tokens, issuer=issuer.url, org=centre.ORG, console=url
                ),
                flush=True,
            )
            while signals.wait() is None:  # woken by a signal, or by a child's output ending
                processes.check_alive()
                console.check_alive()
    return 0


def _check_issuer_port(listen: str) -> None:
    try:
        Endpoint("issuer", listen).check_free()
    except LaunchError:
        raise LaunchError(
            f"the development token issuer cannot listen on {listen}: another process holds "
            "the port (`make run` already running?); ISSUER_DIR and ISSUER_LISTEN give `make "
            "run` an issuer of its own (docs/security.md)"
        ) from None


def _print(service: str, line: str) -> None:
    print(line, flush=True)


BANNER = """
The staff console: {console} (sign in with one click per role; docs/console.md)

All three services are SERVING (SQLite under var/), trusting the development issuer at
{issuer} (keys under var/issuer/). A token per role, of organisation {org} and every site,
valid 8 hours (`make token ROLE=<role> [ORG=<organisation>]` prints a fresh one):

{tokens}

  scheduler  {s}
  inventory  {i}
  notify     {n}

Paste the exports above, then call them with buf (installed by `make run` from package.json;
reflection and health need no token), from this directory:
  npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://{i}
  npx buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $PHARMACIST" \\
    -d '{{"page_size": 5}}' http://{i}/infusion.inventory.v1.InventoryService/ListProducts
  npx buf curl --protocol grpc --http2-prior-knowledge \\
    -H "authorization: Bearer $SCHEDULING_COORDINATOR" -d '{{"organisation_id": "{org}"}}' \\
    http://{s}/infusion.scheduler.v1.SchedulerService/ListSites
  npx buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $PHARMACIST" \\
    -d '{{"site_id": "demo-london"}}' http://{i}/infusion.inventory.v1.InventoryService/GetStockLevels
  npx buf curl --protocol grpc --http2-prior-knowledge -H "authorization: Bearer $INTEGRATION" \\
    -d '{{"page_size": 5}}' http://{n}/infusion.notify.v1.NotifyService/ListNotifications
A nurse may not change the catalogue (PERMISSION_DENIED); no token is UNAUTHENTICATED.
README.md ("Calling the services") books an infusion from Python and shows grpcurl;
docs/security.md explains roles and tokens.
Notifications print here as "[notify] console to ...": the scheduler's due notices, reminders
and missed infusions (its jobs run every minute), and the inventory's stock alerts.
Ctrl-C stops them.
"""


if __name__ == "__main__":
    raise SystemExit(main())
