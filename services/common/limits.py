"""What a caller may hold on a gRPC server, and for how long: admission, streams, transport.

grpcio's synchronous server runs every call on the one ThreadPoolExecutor it is given, and a
server stream keeps its thread until it ends. Left alone, a few dozen idle ``Subscribe`` streams
took every thread and unary calls (health checks too) queued behind them without end. So the
pool is partitioned by admission, decided on the call's thread before any work is done:

- **unary calls**: at most ``grpc_workers`` run at once; up to ``grpc_max_queued`` more wait
  for a slot, each at most ``grpc_queue_timeout_seconds`` (less if its deadline is nearer);
  past either they are answered RESOURCE_EXHAUSTED at once, never queued without end;
- **streams** (server, client or bidirectional): at most ``grpc_max_streams`` open, and at most
  ``grpc_max_streams_per_caller`` for one caller, else RESOURCE_EXHAUSTED;
- **health checks** are never refused or made to wait.

The pool has ``workers + queued + streams + RESERVE`` threads. Admitted calls can hold at most
``workers + queued + streams`` of them, so RESERVE threads are always free to answer a health
check or refuse a call, however many streams are open. gRPC's own ``maximum_concurrent_rpcs``
is twice the pool: past it a call is refused before it reaches Python, so a flood cannot queue
without bound either.

The caller of a stream is its peer's address (without the port, so opening more connections
does not buy more streams); ``caller`` is a parameter so that an authenticated subject can
take its place.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.interceptors import ERROR_DOMAIN
from services.common.settings import ServiceSettings
from services.common.wrapping import Behaviour, StreamBehaviour, WrappingInterceptor

RESERVE = 4
"""Threads no admitted call can take: health checks and refusals always find one."""

NEVER_LIMITED = frozenset({"/grpc.health.v1.Health/Check"})
"""Methods admitted without a slot: probes must answer however busy the server is."""

_INT_MAX = 2**31 - 1  # gRPC's "no limit" for its millisecond arguments

Caller = Callable[[grpc.ServicerContext], str]


def peer_host(context: grpc.ServicerContext) -> str:
    """The caller as its network address without the port: ``ipv4:10.1.2.3``, ``ipv6:[::1]``.
    Behind a proxy every caller shares the proxy's address (size the per-caller limit so)."""
    peer = context.peer() or "unknown"
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{rest.rpartition(':')[0] or rest}"
    return peer


def _ms(seconds: float) -> int:
    return _INT_MAX if seconds <= 0 else int(seconds * 1000)


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """Transport limits: message size, keepalive, client ping policy, connection idle and age.

    The server pings a connection quiet for ``grpc_keepalive_seconds`` and drops it when no
    answer comes within ``grpc_keepalive_timeout_seconds``, so a vanished client frees its
    streams. A client may ping (even without calls) at most every
    ``grpc_min_ping_interval_seconds``; two pings faster than that close its connection. A
    connection without calls for ``grpc_max_connection_idle_seconds`` is closed, and every
    connection is asked to reconnect after ``grpc_max_connection_age_seconds`` (calls then get
    the grace to finish), which also spreads long-lived clients over new replicas.
    """
    s = settings
    ping_interval_ms = int(s.grpc_min_ping_interval_seconds * 1000)
    return [
        # on only in the workers of a service run as several processes (processes.py): a
        # lone process must fail to bind a port another program holds
        ("grpc.so_reuseport", 1 if s.reuse_port else 0),
        ("grpc.max_receive_message_length", s.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", _ms(s.grpc_keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", _ms(s.grpc_keepalive_timeout_seconds)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ping_interval_ms),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", _ms(s.grpc_max_connection_idle_seconds)),
        ("grpc.max_connection_age_ms", _ms(s.grpc_max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", _ms(s.grpc_max_connection_age_grace_seconds)),
    ]


def pool_size(settings: ServiceSettings) -> int:
    s = settings
    return s.grpc_workers + s.grpc_max_queued + s.grpc_max_streams + RESERVE


def executor(settings: ServiceSettings) -> ThreadPoolExecutor:
    """The server's one pool (threads start only when needed, so idle slots cost nothing)."""
    return ThreadPoolExecutor(
        max_workers=pool_size(settings), thread_name_prefix=f"{settings.service}-rpc"
    )


def maximum_concurrent_rpcs(settings: ServiceSettings) -> int:
    return 2 * pool_size(settings)


# --- admission -----------------------------------------------------------------------------------


class UnaryGate:
    """``capacity`` calls at once; up to ``max_waiting`` more wait for a slot, each for at most
    the time it is given."""

    def __init__(self, capacity: int, max_waiting: int) -> None:
        self.capacity = capacity
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self.running = 0
        self.waiting = 0

    def enter(self, wait_seconds: float) -> bool:
        with self._cond:
            if self.running < self.capacity:
                self.running += 1
                return True
            if self.waiting >= self.max_waiting or wait_seconds <= 0:
                return False
            self.waiting += 1
            try:
                if not self._cond.wait_for(lambda: self.running < self.capacity, wait_seconds):
                    return False
                self.running += 1
                return True
            finally:
                self.waiting -= 1

    def leave(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify()


class StreamSlots:
    """At most ``capacity`` streams open, at most ``per_caller`` for one caller."""

    def __init__(self, capacity: int, per_caller: int) -> None:
        self.capacity = capacity
        self.per_caller = per_caller
        self._lock = threading.Lock()
        self._by_caller: Counter[str] = Counter()
        self.open = 0

    def take(self, caller: str) -> str | None:
        """None when admitted (give it back with ``give_back``), else the reason refused."""
        with self._lock:
            if self._by_caller[caller] >= self.per_caller:
                return "TOO_MANY_STREAMS_FOR_CALLER"
            if self.open >= self.capacity:
                return "TOO_MANY_STREAMS"
            self._by_caller[caller] += 1
            self.open += 1
            return None

    def give_back(self, caller: str) -> None:
        with self._lock:
            self.open -= 1
            self._by_caller[caller] -= 1
            if self._by_caller[caller] <= 0:
                del self._by_caller[caller]

    def held_by(self, caller: str) -> int:
        with self._lock:
            return self._by_caller[caller]


_MESSAGES = {
    "SERVER_AT_CAPACITY": "the server is at capacity: retry with backoff",
    "TOO_MANY_STREAMS": "the server has as many streams open as it serves: retry with backoff",
    "TOO_MANY_STREAMS_FOR_CALLER": "this caller has as many streams open as one caller may: "
    "close one first",
}


def _refuse(context: grpc.ServicerContext, reason: str, limit: int) -> NoReturn:
    details = [
        error_details_pb2.ErrorInfo(
            reason=reason, domain=ERROR_DOMAIN, metadata={"limit": str(limit)}
        ),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1)),
    ]
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    status = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message=_MESSAGES[reason], details=packed
    )
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status raises")  # pragma: no cover


class LimitsInterceptor(WrappingInterceptor):
    """Admits each call to its share of the pool (module docstring). Handlers are wrapped once
    per method and reused (services/common/wrapping.py)."""

    def __init__(self, settings: ServiceSettings, caller: Caller = peer_host) -> None:
        super().__init__()
        self.unary = UnaryGate(settings.grpc_workers, settings.grpc_max_queued)
        self.streams = StreamSlots(settings.grpc_max_streams, settings.grpc_max_streams_per_caller)
        self.queue_timeout = settings.grpc_queue_timeout_seconds
        self.caller = caller

    def applies_to(self, method: str) -> bool:
        return method not in NEVER_LIMITED

    def wrap_unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        return self._unary(behaviour)

    def wrap_stream(self, method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
        return self._stream(behaviour)

    def wrap_other(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Client and bidirectional streams (reflection) count as streams too."""
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._client_stream(handler.stream_unary), **codec
            )
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream), **codec)

    def _unary(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def admitted(request: Any, context: grpc.ServicerContext) -> Any:
            if not self.unary.enter(min(self.queue_timeout, context.time_remaining())):
                _refuse(context, "SERVER_AT_CAPACITY", self.unary.capacity)
            try:
                return behaviour(request, context)
            finally:
                self.unary.leave()

        return admitted

    def _stream(self, behaviour: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def admitted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            caller = self.caller(context)
            refused = self.streams.take(caller)
            if refused is not None:
                _refuse(context, refused, self._limit(refused))
            try:
                yield from behaviour(request, context)
            finally:
                self.streams.give_back(caller)

        return admitted

    def _client_stream(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def admitted(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            caller = self.caller(context)
            refused = self.streams.take(caller)
            if refused is not None:
                _refuse(context, refused, self._limit(refused))
            try:
                return behaviour(requests, context)
            finally:
                self.streams.give_back(caller)

        return admitted

    def _limit(self, reason: str) -> int:
        if reason == "TOO_MANY_STREAMS_FOR_CALLER":
            return self.streams.per_caller
        return self.streams.capacity
