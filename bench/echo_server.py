"""The baseline: a bare grpcio server that echoes bytes, with the same thread-pool shape as
the services but no interceptor, database or protobuf work. `python -m bench.echo_server PORT`"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc

METHOD = "/bench.Echo/Echo"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def serve(address: str, workers: int = 16) -> grpc.Server:
    server = grpc.server(ThreadPoolExecutor(max_workers=workers))
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(address)
    server.start()
    return server


def until_stopped() -> None:
    """Returns at SIGTERM or SIGINT: a benchmark server's main thread waits here."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def main() -> None:
    server = serve(sys.argv[1])
    print("echo SERVING", flush=True)
    until_stopped()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
