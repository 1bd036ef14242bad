"""Overload: open streams and bursts of calls past capacity leave health answering, and every
call either succeeds or is refused RESOURCE_EXHAUSTED quickly — nothing hangs
(services/common/limits.py, docs/operations.md "Limits"). Real servers, SQLite and PostgreSQL.

Time bounds here are generous ceilings on "answers at all" (a hang would hit the calls'
deadlines of 10 s or more), not speed measurements.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infusion.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.common.clock import FixedClock
from services.common.limits import LimitsInterceptor
from services.common.server import GrpcService
from services.inventory.__main__ import build as build_inventory
from services.inventory.api.servicer import InventoryServicer
from services.inventory.settings import load_settings as inventory_settings
from services.scheduler.__main__ import build as build_scheduler
from services.scheduler.adapters.inventory_products import InventoryProducts
from services.scheduler.api.servicer import SchedulerServicer
from services.scheduler.settings import load_settings as scheduler_settings

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.errors import detail  # noqa: E402
from tests.integration.notify_conftest import (  # noqa: E402
    NOW,
    Factory,
    NotifyServer,
    config,
    create,
    lot_expiring,
    publish,
)
from tests.issuer import TestIssuer  # noqa: E402

pytest_plugins = ["tests.integration.notify_conftest"]

STREAMS = 200


def reason(error: grpc.RpcError) -> str:
    info = detail(error, error_details_pb2.ErrorInfo)
    return info.reason if info else ""


def health_answers(address: str) -> float:
    """Seconds the whole-server health check took; it must say SERVING within 1 s."""
    with grpc.insecure_channel(address) as channel:
        started = time.monotonic()
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
        took = time.monotonic() - started
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return took


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def admission(service: GrpcService) -> LimitsInterceptor:
    assert service.admission is not None
    return service.admission


class Gate:
    """Holds calls inside a handler until released (a slow handler, injected)."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def around(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def slow(*args: Any, **kwargs: Any) -> Any:
            self.entered.release()
            assert self.release.wait(20)
            return behaviour(*args, **kwargs)

        return slow


@pytest.fixture
def crowded(notify_factory: Factory) -> Iterator[NotifyServer]:
    server = notify_factory(
        config(
            grpc_workers=4,
            grpc_max_queued=4,
            grpc_queue_timeout_seconds=0.5,
            grpc_max_streams=STREAMS + 20,
            grpc_max_streams_per_caller=STREAMS,
            heartbeat_seconds=30,
        )
    )
    yield server


def test_streams_and_a_burst_leave_health_answering_and_nothing_hangs(
    crowded: NotifyServer, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = crowded
    s = create(server)
    publish(server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id])
    token = issuer.integration_token()
    channels = [issuer.channel(server.address, token) for _ in range(4)]
    stubs = [notify_pb2_grpc.NotifyServiceStub(c) for c in channels]
    streams = []
    try:
        # 200 streams from one caller (one address, over four connections), each seen running
        for i in range(STREAMS):
            stream = stubs[i % len(stubs)].Subscribe(pb.SubscribeRequest(), timeout=60)
            assert next(stream).event.sequence == 1  # the replay: the stream is running
            streams.append(stream)
        assert admission(server.app.service).streams.open == STREAMS
        assert health_answers(server.address) < 1

        # the 201st from the same caller is refused at once
        extra = stubs[0].Subscribe(pb.SubscribeRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            next(extra)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(caught.value) == "TOO_MANY_STREAMS_FOR_CALLER"

        # a burst of unary calls past capacity while the handlers are slow
        gate = Gate()
        subscribers = server.app.api.subscribers
        monkeypatch.setattr(subscribers, "list", gate.around(subscribers.list))
        outcomes = burst(server.stub.ListSubscribers, pb.ListSubscribersRequest(), 40)
        for _ in range(4):  # the four workers are in the handler
            assert gate.entered.acquire(timeout=10)
        refused = outcomes(36)  # the rest: refused, four of them after the 0.5 s queue wait
        assert {code for code, _ in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert max(took for _, took in refused) < 3
        assert health_answers(server.address) < 1
        gate.release.set()
        codes = Counter(code for code, _ in outcomes(0))
        assert codes == {grpc.StatusCode.OK: 4, grpc.StatusCode.RESOURCE_EXHAUSTED: 36}
        assert server.stub.ListSubscribers(pb.ListSubscribersRequest(), timeout=5).subscribers
    finally:
        for stream in streams:
            stream.cancel()
    # a client that goes away gives its stream's slot back
    wait_until(lambda: admission(server.app.service).streams.open == 0)
    for channel in channels:
        channel.close()


def burst(
    call: Callable[..., Any], request: Any, count: int
) -> Callable[[int], list[tuple[grpc.StatusCode, float]]]:
    """Starts ``count`` calls at once; the returned function waits until ``n`` of them have
    finished (all with n=0) and gives each finished call's code and duration."""
    pool = ThreadPoolExecutor(max_workers=count)

    def one() -> tuple[grpc.StatusCode, float]:
        started = time.monotonic()
        try:
            call(request, timeout=15)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        return code, time.monotonic() - started

    futures = [pool.submit(one) for _ in range(count)]

    def results(n: int) -> list[tuple[grpc.StatusCode, float]]:
        if n == 0:
            pool.shutdown(wait=True)
            return [f.result() for f in futures]
        wait_until(lambda: sum(f.done() for f in futures) >= n)
        return [f.result() for f in futures if f.done()]

    return results


def test_idle_streams_end_cleanly_with_their_cursor(notify_factory: Factory) -> None:
    server = notify_factory(config(stream_idle_seconds=0.5, heartbeat_seconds=0.2))
    s = create(server)
    publish(server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id])
    started = time.monotonic()
    received = list(server.stub.Subscribe(pb.SubscribeRequest(), timeout=20))  # ends with OK
    assert time.monotonic() - started < 10
    assert received[0].event.sequence == 1
    assert received[-1].HasField("heartbeat")
    assert received[-1].heartbeat.sequence == 1  # where to resume
    wait_until(lambda: admission(server.app.service).streams.open == 0)


def test_streams_end_cleanly_when_the_server_shuts_down(notify_factory: Factory) -> None:
    server = notify_factory(config(heartbeat_seconds=30))
    streams = [server.stub.Subscribe(pb.SubscribeRequest(), timeout=30) for _ in range(5)]
    wait_until(lambda: admission(server.app.service).streams.open == 5)
    started = time.monotonic()
    server.app.service.stop(grace=20)
    assert time.monotonic() - started < 10  # the drain did not wait out the grace
    for stream in streams:
        (last,) = list(stream)  # ends with OK after the cursor
        assert last.heartbeat.sequence == 0
        assert stream.code() == grpc.StatusCode.OK


# --- scheduler and inventory: unary capacity --------------------------------------------------


def _inventory(database_url: str, limits: dict[str, str]) -> tuple[GrpcService, Callable[..., Any]]:
    settings = inventory_settings(
        {
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_LISTEN": "127.0.0.1:0",
            "INVENTORY_JOBS": "0",
            "INVENTORY_AUDIT_LINKER": "thread",
            **{f"INVENTORY_{k}": v for k, v in limits.items()},
        }
    )
    issuer = TestIssuer()
    service = build_inventory(settings, FixedClock(NOW), issuer.service_auth("inventory"))
    service.start()
    stub = inventory_pb2_grpc.InventoryServiceStub(issuer.channel(service.address))
    return service, lambda **kw: stub.ListProducts(inventory_pb2.ListProductsRequest(), **kw)


def _scheduler(database_url: str, limits: dict[str, str]) -> tuple[GrpcService, Callable[..., Any]]:
    settings = scheduler_settings(
        {
            "SCHEDULER_DATABASE_URL": database_url,
            "SCHEDULER_LISTEN": "127.0.0.1:0",
            "SCHEDULER_JOBS": "0",
            "SCHEDULER_AUDIT_LINKER": "thread",
            **{f"SCHEDULER_{k}": v for k, v in limits.items()},
        }
    )
    issuer = TestIssuer()
    products = InventoryProducts(grpc.insecure_channel("127.0.0.1:9"))  # not called here
    service = build_scheduler(settings, FixedClock(NOW), products, issuer.service_auth("scheduler"))
    service.start()
    stub = scheduler_pb2_grpc.SchedulerServiceStub(issuer.channel(service.address))
    return service, lambda **kw: stub.GetSite(scheduler_pb2.GetSiteRequest(id="site-x"), **kw)


@pytest.mark.parametrize(
    ("start", "servicer", "method"),
    [(_inventory, InventoryServicer, "ListProducts"), (_scheduler, SchedulerServicer, "GetSite")],
    ids=["inventory", "scheduler"],
)
def test_unary_calls_past_capacity_are_refused_quickly(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    start: Callable[..., tuple[GrpcService, Callable[..., Any]]],
    servicer: type,
    method: str,
) -> None:
    gate = Gate()
    monkeypatch.setattr(servicer, method, gate.around(getattr(servicer, method)))
    limits = {"GRPC_WORKERS": "1", "GRPC_MAX_QUEUED": "1", "GRPC_QUEUE_TIMEOUT_SECONDS": "0.3"}
    service, call = start(database_url, limits)
    try:
        pool = ThreadPoolExecutor(max_workers=2)
        held = pool.submit(_timed, call)
        assert gate.entered.acquire(timeout=10)  # the one worker is busy
        waiting = pool.submit(_timed, call)  # waits 0.3 s for the worker, then is refused
        wait_until(lambda: admission(service).unary.waiting == 1)
        code, took = _timed(call)  # the queue is full: refused at once
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and took < 2
        code, took = waiting.result(timeout=10)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and 0.2 < took < 3
        assert health_answers(service.address) < 1
        gate.release.set()
        answered = (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)  # site-x does not exist
        assert held.result(timeout=10)[0] in answered
        assert _timed(call)[0] in answered  # capacity is back
        pool.shutdown()
    finally:
        gate.release.set()
        service.stop(0)


def _timed(call: Callable[..., Any]) -> tuple[grpc.StatusCode, float]:
    started = time.monotonic()
    try:
        call(timeout=10)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
    return code, time.monotonic() - started


def test_a_request_over_the_message_limit_is_refused(notify_factory: Factory) -> None:
    server = notify_factory(config(grpc_max_message_bytes=4096))
    with pytest.raises(grpc.RpcError) as caught:
        create(server, display_name="x" * 5000)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert create(server, display_name="x" * 100).id  # a normal one still passes
