"""The load process: keeps N unary calls in flight against one method for a fixed time.

Runs in its own process (grpc.aio client, one event loop) so the server under test has the
machine's other core. Requests are pre-serialised bytes, so the client does the same tiny work
for every target and the comparison with the echo baseline is fair.

`python -m bench.load ADDRESS METHOD REQUEST_HEX --concurrency 32 --seconds 10`
prints one JSON line: calls, errors, seconds, calls_per_second, p50_ms, p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import grpc


async def run(
    address: str, method: str, payload: bytes, concurrency: int, seconds: float, warmup: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    last_done = 0.0
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method, None, None)
        await channel.channel_ready()
        deadline_warm = time.perf_counter() + warmup
        deadline = deadline_warm + seconds

        async def worker() -> None:
            nonlocal errors, last_done
            while True:
                started = time.perf_counter()
                if started >= deadline:
                    return
                try:
                    await call(payload, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                done = time.perf_counter()
                if started >= deadline_warm:
                    latencies.append(done - started)
                    last_done = max(last_done, done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = last_done - deadline_warm
    latencies.sort()
    n = len(latencies)
    return {
        "calls": n,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "calls_per_second": round(n / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1000, 3) if n else 0.0,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3) if n else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("method")
    parser.add_argument("request_hex")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.address,
            args.method,
            bytes.fromhex(args.request_hex),
            args.concurrency,
            args.seconds,
            args.warmup,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
