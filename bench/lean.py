"""The lean baseline per hot path: a bare grpcio server (like bench/echo_server.py: generic
handlers, 16 threads, no interceptor; the authorization header is ignored) answering the real
method paths and message types of ReserveStock and BookAppointment with psycopg 3 and the
minimal race-safe SQL (bench/lean_stock.py, bench/lean_booking.py) on its own ``lean_``
tables. The benchmarks run it in the same run and on the same data shape as echo and the
real service, so "share of lean" says how much of the gap to echo is the work itself.

`python -m bench.lean ADDRESS DATABASE_URL` creates the tables (if missing) in the database
and serves until SIGTERM; the benchmark seeds them (bench/inventory.py, bench/booking.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import psycopg

from bench import lean_booking, lean_stock
from bench.echo_server import until_stopped
from bench.harness import ROOT, conninfo, free_port
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.scheduler.v1 import scheduler_pb2 as pb

RESERVE = "/infusion.inventory.v1.InventoryService/ReserveStock"
BOOK = "/infusion.scheduler.v1.SchedulerService/BookAppointment"


def count(url: str, query: str) -> int:
    """One count(*) over the lean tables: the benchmarks' checks after a lean run."""
    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute(query.encode()).fetchone()
    return int(row[0]) if row else 0


def create_tables(url: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(lean_stock.SCHEMA)
        conn.execute(lean_booking.SCHEMA)


class Connections:
    """A connection per request thread (psycopg_pool is not a dependency), autocommit: each
    handler decides where its transaction is."""

    def __init__(self, url: str) -> None:
        self._url = conninfo(url)
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def get(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self._url, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()


def _handler(
    connections: Connections,
    work: Callable[[psycopg.Connection[Any], Any, grpc.ServicerContext], Any],
    request_type: Any,
    response_type: Any,
) -> grpc.RpcMethodHandler[Any, Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        return work(connections.get(), request, context)

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=request_type.FromString,
        response_serializer=response_type.SerializeToString,
    )


def serve(address: str, url: str, workers: int = 16) -> tuple[grpc.Server, Connections]:
    """Started; the caller stops the server, then closes the connections."""
    create_tables(url)
    connections = Connections(url)
    server = grpc.server(ThreadPoolExecutor(max_workers=workers))
    inventory = grpc.method_handlers_generic_handler(
        "infusion.inventory.v1.InventoryService",
        {
            "ReserveStock": _handler(
                connections, lean_stock.reserve, inv.ReserveStockRequest, inv.ReserveStockResponse
            )
        },
    )
    scheduler = grpc.method_handlers_generic_handler(
        "infusion.scheduler.v1.SchedulerService",
        {
            "BookAppointment": _handler(
                connections,
                lean_booking.book,
                pb.BookAppointmentRequest,
                pb.BookAppointmentResponse,
            )
        },
    )
    server.add_generic_rpc_handlers((inventory, scheduler))
    server.add_insecure_port(address)
    server.start()
    return server, connections


@contextmanager
def lean_process(url: str, module: str = "bench.lean") -> Iterator[tuple[str, int]]:
    """The lean server (``module``: this one, or bench.lean_aio) as a process of its own (as
    the real services and echo run) on a free port, tables created in ``url``'s database; its
    address and process id (its CPU is read around each load), once it says it is SERVING."""
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, address, url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if "SERVING" not in proc.stdout.readline():
            raise RuntimeError("the lean baseline did not start")
        yield address, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def main() -> None:
    server, connections = serve(sys.argv[1], sys.argv[2])
    print("lean SERVING", flush=True)
    until_stopped()
    server.stop(1).wait()
    connections.close()


if __name__ == "__main__":
    main()
