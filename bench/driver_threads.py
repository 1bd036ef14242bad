"""What a PostgreSQL driver costs a threaded Python server, apart from the server.

N threads, each looping over a fixed piece of pure-Python work (a stand-in for a handler's
own code) and then a few small round trips on its own connection, as the services' request
threads do. Reported per operation: throughput, the process's CPU (user + system) and its
context switches (voluntary + involuntary, summed over its threads from /proc).

Why: under load the services spend a quarter to a third of their CPU in the kernel, and a
ReserveStock call switches context about 84 times (the lean baseline: 28, the bare echo: 15).
A driver that releases the GIL around every short libpq call (psycopg 3 does, in its C
generators and its libpq wrapper) hands the GIL to a waiting thread each time, and each hand-off
is a wake-up and a switch; one that releases it once per blocking round trip (psycopg2) does
not. This measures the difference alone. psycopg2 is not a dependency of the services: it is
measured when importable (`.venv/bin/pip install psycopg2-binary`), skipped otherwise.

`python -m bench.driver_threads [--threads 1,2,4,8,16] [--round-trips 4] [--seconds 6]`
on the benchmarks' PostgreSQL (127.0.0.1:5432, database ``postgres``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

DSN = "host=127.0.0.1 user=postgres dbname=postgres"
WORK = 3000  # loop iterations of Python between round trips: about 100 µs on this machine


def _connect(driver: str) -> Any:
    if driver == "psycopg":
        import psycopg

        return psycopg.connect(DSN)
    return importlib.import_module("psycopg2").connect(DSN)  # optional: not a dependency


def _work() -> int:
    total = 0
    for i in range(WORK):
        total += i * i
    return total


def _switches() -> int:
    count = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/status") as status:
            for line in status:
                if "ctxt_switches" in line:
                    count += int(line.split()[1])
    return count


def measure(driver: str, threads: int, round_trips: int, seconds: float) -> dict[str, float]:
    done = 0
    lock = threading.Lock()
    stop = threading.Event()

    def loop() -> None:
        nonlocal done
        connection = _connect(driver)
        cursor = connection.cursor()
        try:
            while not stop.is_set():
                _work()
                for _ in range(round_trips):
                    cursor.execute("SELECT %s::int + 1", (1,))
                    cursor.fetchall()
                connection.commit()
                with lock:
                    done += 1
        finally:
            connection.close()

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    time.sleep(1.0)  # connected and warm
    ops0, csw0, t0 = done, _switches(), time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds)
    ops1, csw1, t1 = done, _switches(), time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    for w in workers:
        w.join()
    ops = max(ops1 - ops0, 1)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    system = r1.ru_stime - r0.ru_stime
    return {
        "ops_per_second": round(ops / (t1 - t0)),
        "cpu_us_per_op": round(1e6 * cpu / ops),
        "switches_per_op": round((csw1 - csw0) / ops, 1),
        "system_share": round(system / cpu, 2) if cpu else 0.0,
    }


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--round-trips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    drivers = ["psycopg"]
    if importlib.util.find_spec("psycopg2") is not None:
        drivers.append("psycopg2")
    else:
        log("psycopg2 is not installed: measuring psycopg 3 alone")
    log("| threads | driver | ops/s | CPU µs/op | context switches/op | system share |")
    log("| ---: | --- | ---: | ---: | ---: | ---: |")
    for threads in (int(t) for t in args.threads.split(",")):
        for driver in drivers:
            r = measure(driver, threads, args.round_trips, args.seconds)
            log(
                f"| {threads} | {driver} | {r['ops_per_second']:,} | {r['cpu_us_per_op']:,} | "
                f"{r['switches_per_op']} | {100 * r['system_share']:.0f} % |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
