"""The console's chair board: latency of ``GET /board`` for a 30-chair day with 90
appointments, as a nurse's browser asks for it (the whole page, then the rows partial the wall
screen and the live board re-fetch), one request at a time.

The three services run as processes on SQLite (as under `make run`) trusting a development
issuer of the run's own; the console runs as its own process (uvicorn, as under `make run`).
The site has 30 chairs open 07:00–21:00 with 8 nurses at 1:4; setup (through the RPCs) makes
90 patients with plans and books three infusions on every chair of one weekday, at 07:00 (or
07:15), 11:00 (11:15) and 15:00 (15:15). The nurse signs in through the real authorization code
flow (the console's redirect, the issuer's one-click page, the console's callback), then the
board is fetched ``BOARD_REQUESTS`` times per form. Each answer is checked: status 200 and all
90 patients' names on it.

Target (docs/benchmarks.md): p95 under 300 ms.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import httpx

from bench.booking import weekdays_from
from bench.harness import ORG, channel, dev_issuer, environment, free_port, operator_token, running
from demo.builder import Builder, shifts
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.launcher import SERVICES, Endpoint, ServiceProcesses
from services.launcher import running as launch

CHAIRS = 30
STARTS = (7, 11, 15)  # three infusions a chair: 90 appointments
BOARD_REQUESTS = int(os.environ.get("BENCH_BOARD_REQUESTS", "200"))


def prepare(sch: Any, stock: Any, day: dt.date) -> tuple[str, list[str]]:
    """The 30-chair site and its 90 bookings on ``day``; returns the site id and the patients'
    family names (what the board must show)."""
    build = Builder(sch, stock, ORG, ids=lambda label: f"board-{label}")
    site = build.site(
        name="Board bench centre",
        open_h=7,
        close_h=21,
        capacity=pb.SiteCapacity(
            nurse_shifts=shifts(8, start=7, end=21),
            nurse_ratio=4,
            start_limit=2,
            turnover_minutes=15,
        ),
    )
    chairs = build.chairs(site.id, CHAIRS)
    product = stock.GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product.id

    def book(i: int) -> str:
        family = f"Board{i:03d}"
        _, plan = build.enrol(
            f"BB{i:05d}",
            site.id,
            product,
            day,
            measured_on=day - dt.timedelta(days=7),
            weight="50",
            height="165",
            given="Bench",
            family=family,
            born=dt.date(1970, 1, 1),
            plan={"maintenance_dose": "0.4"},
            key=str(i),
        )
        chair, turn = i % CHAIRS, i // CHAIRS
        build.book(plan.id, chairs[chair].id, day, STARTS[turn], 0 if chair < CHAIRS // 2 else 15)
        return family

    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(book, range(CHAIRS * len(STARTS))))
    return site.id, names


@contextmanager
def console(env: dict[str, str]) -> Iterator[str]:
    """The console as a process of its own on a free port; its base URL."""
    listen = f"127.0.0.1:{free_port()}"
    processes = ServiceProcesses(
        [Endpoint("console", listen)],
        {**env, "CONSOLE_LISTEN": listen, "LOG_LEVEL": "WARNING"},
        lambda _name, _line: None,
        lambda _name: subprocess.DEVNULL,  # type: ignore[arg-type,return-value]
    )
    with launch(processes):
        yield f"http://{listen}"


def sign_in(client: httpx.Client, role: str) -> None:
    """The authorization code flow as a browser does it (tests/integration/console_support.py
    does the same through the test client)."""
    to_issuer = client.get("/login", params={"next": "/"})
    authorize = to_issuer.headers["location"]
    page = httpx.get(authorize)
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', page.text))
    answer = httpx.post(
        authorize.split("?")[0],
        data={
            **{k: html.unescape(v) for k, v in fields.items()},
            "role": role,
            "organisation": ORG,
        },
        follow_redirects=False,
    )
    back = urlparse(answer.headers["location"])
    done = client.get(f"{back.path}?{back.query}")
    if done.status_code != 303:
        raise RuntimeError(f"signing in as {role} failed: {done.status_code}")


def timed(
    client: httpx.Client,
    params: dict[str, str],
    names: list[str],
    partial: bool,
    requests: int = BOARD_REQUESTS,
) -> list[float]:
    headers = {"HX-Request": "true"} if partial else {}
    millis = []
    for _ in range(requests):
        began = time.perf_counter()
        answer = client.get("/board", params=params, headers=headers)
        millis.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"GET /board answered {answer.status_code}")
        missing = [n for n in names if n not in answer.text]
        if missing:
            raise RuntimeError(f"the board lacks {len(missing)} of the 90 patients")
    return millis


def summary(millis: list[float]) -> dict[str, Any]:
    cuts = statistics.quantiles(millis, n=100)
    return {
        "requests": len(millis),
        "p50_ms": round(statistics.median(millis), 1),
        "p95_ms": round(cuts[94], 1),
        "p99_ms": round(cuts[98], 1),
        "max_ms": round(max(millis), 1),
    }


def run(log: Callable[[str], None]) -> dict[str, Any]:
    day = next(weekdays_from(dt.date.today() + dt.timedelta(days=7)))
    with dev_issuer() as issuer, tempfile.TemporaryDirectory() as data:
        databases = {name: f"sqlite:///{data}/{name}.db" for name in SERVICES}
        env = environment(
            issuer, databases, SCHEDULER_JOBS="0", INVENTORY_JOBS="0", NOTIFY_JOBS="0"
        )
        with running(env, SERVICES) as processes:
            token = operator_token(issuer)
            sch = scheduler_pb2_grpc.SchedulerServiceStub(
                channel(processes.addresses["scheduler"], token)
            )
            stock = inventory_pb2_grpc.InventoryServiceStub(
                channel(processes.addresses["inventory"], token)
            )
            log("board bench: 30 chairs, 90 bookings …")
            site_id, names = prepare(sch, stock, day)
            with console(env) as base, httpx.Client(base_url=base, timeout=30) as client:
                sign_in(client, "nurse")
                params = {"site": site_id, "date": day.isoformat()}
                timed(client, params, names, False, 10)  # warm: connections, templates
                results = {}
                for partial, name in ((False, "whole page"), (True, "rows partial")):
                    log(f"board bench: GET /board, {name} × {BOARD_REQUESTS} …")
                    results[f"GET /board, 30 chairs, 90 appointments, {name}"] = summary(
                        timed(client, params, names, partial)
                    )
    return {"results": results, "load_average": os.getloadavg()}


if __name__ == "__main__":
    import json

    print(json.dumps(run(print), indent=2))
