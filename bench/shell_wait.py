"""Would an asyncio server shell make a patient read's audit wait cheaper? A bare-grpcio
experiment, no service code but the group commit: a unary handler does a fixed amount of Python
work (about CalculateDose's share of the scheduler) and then, with the record, waits until a
200-byte row is committed to SQLite (WAL, synchronous=NORMAL, as the services run it) in a
batch shared with the concurrent calls. Shells, each as its own process:

- ``sync``: grpcio's thread-per-call server (16 threads, as the services), waiting in
  services.common.audit.group_commit (the leader among the callers writes, the others sleep
  on a gate each);
- ``aio-pool``: grpc.aio, the work on a 16-thread pool (as sync handlers run under grpc.aio),
  then awaiting a future that one writer thread resolves for its whole batch with a single
  hand-over to the event loop;
- ``aio-inline``: grpc.aio with the work in the event loop itself (an all-async service).

Each with and without the record (``-0``), alternating for ``--rounds`` rounds.

    python -m bench.shell_wait --seconds 6 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from bench.harness import cpu_ms_per_call, cpu_seconds, free_port, load, process, wait_port
from services.common.audit.group_commit import GroupCommit

METHOD = "/bench.Wait/Call"
SHELLS = ("sync-0", "sync", "aio-pool-0", "aio-pool", "aio-inline-0", "aio-inline")
WORK_ROUNDS = 3000  # about 0.3 ms of Python on this machine
WORKERS = 16


def _work(request: bytes) -> bytes:
    total = 0
    for i in range(WORK_ROUNDS):
        total += i * i
    return request


def _writer(path: str) -> Callable[[Sequence[str]], None]:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("CREATE TABLE IF NOT EXISTS record (id INTEGER PRIMARY KEY, body TEXT)")

    def write(items: Sequence[str]) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO record (body) VALUES (?)", [(i,) for i in items])
        connection.execute("COMMIT")

    return write


def _handlers(behaviour: Callable[..., Any]) -> grpc.GenericRpcHandler[Any, Any]:
    return grpc.method_handlers_generic_handler(
        "bench.Wait", {"Call": grpc.unary_unary_rpc_method_handler(behaviour)}
    )


def _serve_sync(
    address: str, write: Callable[[Sequence[str]], None], record: bool, workers: int
) -> None:
    group: GroupCommit[str] = GroupCommit(write)

    def call(request: bytes, _context: grpc.ServicerContext) -> bytes:
        answer = _work(request)
        if record:
            group.submit("x" * 200)
        return answer

    server = grpc.server(ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((_handlers(call),))
    server.add_insecure_port(address)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


class _BatchWriter:
    """One thread writing whatever is queued in one transaction, then resolving the batch's
    futures with one hand-over to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, write: Callable[[Sequence[str]], None]):
        self._loop = loop
        self._write = write
        self._arrived = threading.Condition()
        self._queue: list[tuple[str, asyncio.Future[None]]] = []
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, item: str) -> asyncio.Future[None]:
        future = self._loop.create_future()
        with self._arrived:
            self._queue.append((item, future))
            self._arrived.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._arrived:
                while not self._queue:
                    self._arrived.wait()
                batch, self._queue = self._queue, []
            self._write([item for item, _ in batch])
            self._loop.call_soon_threadsafe(_resolve, [future for _, future in batch])


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


async def _serve_aio(
    address: str, write: Callable[[Sequence[str]], None], record: bool, inline: bool, workers: int
) -> None:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(workers)
    writer = _BatchWriter(loop, write)

    async def call(request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        answer = _work(request) if inline else await loop.run_in_executor(pool, _work, request)
        if record:
            await writer.submit("x" * 200)
        return answer

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handlers(call),))
    server.add_insecure_port(address)
    await server.start()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await server.stop(0)


def serve(shell: str, address: str, database: str, workers: int = WORKERS) -> None:
    write = _writer(database)
    record = not shell.endswith("-0")
    if shell.startswith("sync"):
        _serve_sync(address, write, record, workers)
    else:
        inline = shell.startswith("aio-inline")
        asyncio.run(_serve_aio(address, write, record, inline, workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", nargs=3, metavar=("SHELL", "ADDRESS", "DATABASE"))
    parser.add_argument(
        "--shells", default=",".join(SHELLS), help=f"comma-separated, of {', '.join(SHELLS)}"
    )
    parser.add_argument(
        "--workers", type=int, default=WORKERS, help="threads serving (sync) or working (aio-pool)"
    )
    args = parser.parse_args()
    if args.serve:
        shell, address, database = args.serve
        serve(shell, address, database, args.workers)
        return
    print("| shell | round | calls/s | p50 ms | server CPU ms/call |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for n in range(1, args.rounds + 1):
        for shell in args.shells.split(","):
            address = f"127.0.0.1:{free_port()}"
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "bench.shell_wait", "--workers", str(args.workers)]
                cmd += ["--serve", shell, address]
                with process([*cmd, f"{tmp}/records.db"], address, ready=wait_port) as proc:
                    load(address, METHOD, b"dose", 2, args.concurrency)  # warm-up
                    before = cpu_seconds(proc.pid)
                    result = load(address, METHOD, b"dose", args.seconds, args.concurrency)
                    cpu = cpu_ms_per_call(cpu_seconds(proc.pid) - before, result)
            print(
                f"| {shell} | {n} | {result['calls_per_second']:.0f} | "
                f"{result.get('p50_ms', 0):.2f} | {cpu:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
