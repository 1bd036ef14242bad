"""The benchmarks' webhook sink, in a process of its own: `python -m bench.sink HOST:PORT`.

Every POST is answered 204 over a kept-alive HTTP/1.1 connection (uvicorn) and counted, with
its Idempotency-Key, so a delivery sent twice shows as more posts than keys. ``GET /status``
answers ``{"posts", "keys", "first", "last"}``: the wall-clock times (``time.time()``, which
another process can compare with its own) of the first and the latest POST.

It runs apart from the bench because a sink inside the bench process parses every POST under
the same GIL as the bench's fan-out streams and publishing threads, so the bench measured
itself as much as notify.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.harness import free_port, process


@dataclass
class Counts:
    """What the sink has received so far."""

    posts: int = 0
    keys: set[str] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0


def application(counts: Counts) -> Starlette:
    async def hook(request: Request) -> Response:
        await request.body()  # read whole, as a receiver would
        counts.posts += 1
        counts.keys.add(request.headers.get("idempotency-key", ""))
        counts.last = time.time()
        counts.first = counts.first or counts.last
        return Response(status_code=204)

    async def status(_: Request) -> Response:
        return JSONResponse(
            {
                "posts": counts.posts,
                "keys": len(counts.keys),
                "first": counts.first,
                "last": counts.last,
            }
        )

    return Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/status", status)])


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    uvicorn.run(
        application(Counts()),
        host=host,
        port=int(port),
        log_level="warning",
        access_log=False,
        lifespan="off",
        # longer than the dispatcher's pool keeps a connection idle between batches
        timeout_keep_alive=120,
        backlog=2048,
    )


# --- the bench's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    posts: int
    keys: int
    first: float
    last: float


class SinkClient:
    """The bench's view of a running sink: its URL for subscribers and its counts."""

    def __init__(self, address: str) -> None:
        self.url = f"http://{address}/hook"
        self._status = f"http://{address}/status"
        self._client = httpx.Client(trust_env=False, timeout=5)

    def status(self) -> Status:
        found = self._client.get(self._status).json()
        return Status(
            int(found["posts"]), int(found["keys"]), float(found["first"]), float(found["last"])
        )

    def ready(self, _address: str, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.status()
                return True
            except httpx.HTTPError:
                time.sleep(0.05)
        return False

    def wait_for(self, count: int, timeout: float) -> float:
        """The wall-clock time of the last POST once ``count`` distinct deliveries arrived;
        raises on timeout. Polled every 20 ms (a read the sink answers in well under that)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.status()
            if now.keys >= count:
                return now.last
            time.sleep(0.02)
        raise RuntimeError(f"webhook sink: {self.status().keys} of {count} after {timeout} s")

    def close(self) -> None:
        self._client.close()


@contextmanager
def running() -> Iterator[SinkClient]:
    """A sink process on a free local port, stopped afterwards."""
    address = f"127.0.0.1:{free_port()}"
    client = SinkClient(address)
    try:
        with process([sys.executable, "-m", "bench.sink", address], address, ready=client.ready):
            yield client
    finally:
        client.close()


if __name__ == "__main__":
    main()
