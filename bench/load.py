"""The load process: keeps N unary calls in flight against one method for a fixed time.

Runs in its own process (grpc.aio client, one event loop) so the server under test has the
machine's other core. Requests are pre-serialised bytes, so the client does the same tiny work
for every target and the comparison with the echo baseline is fair.

`python -m bench.load ADDRESS METHOD REQUEST_HEX --concurrency 32 --seconds 10 --token JWT`
prints one JSON line: calls, errors, error_codes, seconds, calls_per_second, p50_ms, p99_ms,
connections.

``--connections N`` (default 4) opens N HTTP/2 connections, the calls in flight dealt out over
them in turn: a service run as several processes behind SO_REUSEPORT
(docs/operations.md, "Several processes per service") gets a connection in each process
rather than every call in one. Each is a channel of its own with its own subchannel pool
(``grpc.use_local_subchannel_pool``): grpcio otherwise shares one connection among channels
to the same address with the same options.

REQUEST_HEX may be ``@FILE``: one hex payload per line, sent in turn. ``--unique-field N``
appends string field N with a value no other call of the run has (protobuf keeps the last
occurrence of a field, so this overrides the template's): ReserveStock's appointment_id is its
idempotency key, and a repeated one would be a cheap replay, not a reservation.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import grpc


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string_field(number: int, value: str) -> bytes:
    """The wire encoding of one length-delimited (string) field."""
    data = value.encode()
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def payloads_from(arg: str) -> list[bytes]:
    if arg.startswith("@"):
        lines = Path(arg[1:]).read_text().split()
        return [bytes.fromhex(x) for x in lines]
    return [bytes.fromhex(arg)]


async def run(
    address: str,
    method: str,
    payload: bytes | list[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    unique_field: int = 0,
    token: str = "",
    connections: int = 4,
) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    answered = 0  # every call answered, the warm-up's too: the server's CPU was spent on them
    codes: Counter[str] = Counter()
    last_done = 0.0
    templates = payload if isinstance(payload, list) else [payload]
    counter = itertools.count()
    run_tag = f"{os.getpid()}-{time.time_ns() % 10**9}-"
    cpu_at_start = time.process_time()  # the load's own CPU: it shares the machine's cores

    def next_payload() -> bytes:
        n = next(counter)
        body = templates[n % len(templates)]
        if unique_field:
            body += string_field(unique_field, f"{run_tag}{n}")
        return body

    metadata = (("authorization", f"Bearer {token}"),) if token else None
    channels = [
        grpc.aio.insecure_channel(
            address,
            options=[("grpc.use_local_subchannel_pool", 1), ("bench.load.connection", n)],
        )
        for n in range(max(1, connections))
    ]
    try:
        calls = [channel.unary_unary(method, None, None) for channel in channels]
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        deadline_warm = time.perf_counter() + warmup
        deadline = deadline_warm + seconds

        async def worker(call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]) -> None:
            nonlocal errors, last_done, answered
            while True:
                started = time.perf_counter()
                if started >= deadline:
                    return
                try:
                    await call(next_payload(), timeout=30, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    errors += 1
                    codes[error.code().name] += 1
                    continue
                done = time.perf_counter()
                answered += 1
                if started >= deadline_warm:
                    latencies.append(done - started)
                    last_done = max(last_done, done)

        await asyncio.gather(*(worker(calls[n % len(calls)]) for n in range(concurrency)))
        elapsed = last_done - deadline_warm
    finally:
        await asyncio.gather(*(channel.close(None) for channel in channels))
    latencies.sort()
    n = len(latencies)
    return {
        "calls": n,
        "calls_with_warmup": answered,
        "errors": errors,
        "error_codes": dict(codes),
        "seconds": round(elapsed, 3),
        "calls_per_second": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1000, 3) if n else 0.0,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3) if n else 0.0,
        "connections": len(channels),
        "cpu_seconds": round(time.process_time() - cpu_at_start, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("method")
    parser.add_argument("request_hex")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--unique-field", type=int, default=0)
    parser.add_argument("--token", default="", help="a bearer token every call carries")
    parser.add_argument(
        "--connections", type=int, default=4, help="HTTP/2 connections the calls are spread over"
    )
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.address,
            args.method,
            payloads_from(args.request_hex),
            args.concurrency,
            args.seconds,
            args.warmup,
            args.unique_field,
            args.token,
            args.connections,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
