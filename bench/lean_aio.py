"""The lean ReserveStock on another serving model: grpc's asyncio server and psycopg's
asynchronous connections, one event loop instead of a thread per call. The same statements,
allocation and answers as bench/lean.py's (bench/lean_stock.py, ``reserve_async``), on the
same ``lean_`` tables.

It is here to answer one question with a number in every run: would moving the services to
an asynchronous serving model (an asyncio server and driver, no thread hand-offs and no GIL
passed between sixteen threads) buy the write paths their missing speed? The inventory
benchmark runs the same two loads against it after the threaded lean baseline, on a fresh
copy of the same shelf, and gives its share of that baseline (docs/benchmarks.md, "what is
left is the work").

`python -m bench.lean_aio ADDRESS DATABASE_URL` creates the tables (if missing) and serves
until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import grpc
import psycopg

from bench import lean_stock
from bench.harness import conninfo
from bench.lean import create_tables
from infusion.inventory.v1 import inventory_pb2 as inv

CONNECTIONS = 16
"""As many as the threaded baseline has request threads (one connection each)."""


class AsyncConnections:
    """``size`` autocommit connections, each lent to one call at a time (psycopg_pool is not
    a dependency): a call past the ``size``-th waits on the loop for one to come back."""

    def __init__(self, url: str, size: int = CONNECTIONS) -> None:
        self._url = conninfo(url)
        self._size = size
        self._free: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        self._all: list[psycopg.AsyncConnection[Any]] = []

    async def open(self) -> None:
        for _ in range(self._size):
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            self._all.append(conn)
            self._free.put_nowait(conn)

    async def reserve(
        self, request: inv.ReserveStockRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inv.ReserveStockResponse:
        conn = await self._free.get()
        try:
            return await lean_stock.reserve_async(conn, request, context)
        finally:
            self._free.put_nowait(conn)

    async def close(self) -> None:
        for conn in self._all:
            await conn.close()


async def serve(address: str, url: str, stopped: asyncio.Event) -> None:
    create_tables(url)
    connections = AsyncConnections(url)
    await connections.open()
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        connections.reserve,
        request_deserializer=inv.ReserveStockRequest.FromString,
        response_serializer=inv.ReserveStockResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "infusion.inventory.v1.InventoryService", {"ReserveStock": handler}
            ),
        )
    )
    server.add_insecure_port(address)
    await server.start()
    print("lean SERVING", flush=True)
    await stopped.wait()
    await server.stop(1)
    await connections.close()


async def main(address: str, url: str) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, stopped.set)
    await serve(address, url, stopped)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
