"""Admission (services/common/limits.py): unary slots with a bounded, timed queue; streams
per server and per caller; the caller key; the transport options built from settings."""

from __future__ import annotations

import threading
import time

import pytest

from services.common.limits import (
    RESERVE,
    StreamSlots,
    UnaryGate,
    maximum_concurrent_rpcs,
    peer_host,
    pool_size,
    server_options,
)
from services.common.settings import SettingsError
from services.inventory.settings import load_settings as inventory_settings
from services.scheduler.settings import load_settings as scheduler_settings


def test_unary_gate_admits_capacity_then_queues_then_refuses() -> None:
    gate = UnaryGate(capacity=2, max_waiting=1)
    assert gate.enter(0) and gate.enter(0)
    assert not gate.enter(0)  # full, and no wait allowed
    admitted: list[bool] = []
    waiter = threading.Thread(target=lambda: admitted.append(gate.enter(5)))
    waiter.start()
    while gate.waiting == 0:
        time.sleep(0.001)
    assert not gate.enter(5)  # the one queue place is taken: refused without waiting
    gate.leave()
    waiter.join(5)
    assert admitted == [True] and gate.running == 2 and gate.waiting == 0


def test_unary_gate_wait_ends_at_the_timeout() -> None:
    gate = UnaryGate(capacity=1, max_waiting=4)
    assert gate.enter(0)
    started = time.monotonic()
    assert not gate.enter(0.05)
    assert 0.04 < time.monotonic() - started < 2
    assert gate.waiting == 0


def test_stream_slots_per_caller_and_in_total() -> None:
    slots = StreamSlots(capacity=3, per_caller=2)
    assert slots.take("a") is None and slots.take("a") is None
    assert slots.take("a") == "TOO_MANY_STREAMS_FOR_CALLER"
    assert slots.take("b") is None
    assert slots.take("c") == "TOO_MANY_STREAMS"
    slots.give_back("a")
    assert slots.held_by("a") == 1 and slots.take("c") is None


class _Peer:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(
    ("peer", "caller"),
    [
        ("ipv4:10.1.2.3:51234", "ipv4:10.1.2.3"),
        ("ipv6:[::1]:40000", "ipv6:[::1]"),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
    ],
)
def test_the_caller_is_the_peer_address_without_the_port(peer: str, caller: str) -> None:
    assert peer_host(_Peer(peer)) == caller  # type: ignore[arg-type]


def test_options_and_pool_follow_the_settings() -> None:
    s = inventory_settings(
        {
            "INVENTORY_GRPC_WORKERS": "8",
            "INVENTORY_GRPC_MAX_QUEUED": "10",
            "INVENTORY_GRPC_MAX_STREAMS": "30",
            "INVENTORY_GRPC_MAX_MESSAGE_BYTES": "65536",
            "INVENTORY_GRPC_KEEPALIVE_SECONDS": "30",
            "INVENTORY_GRPC_MAX_CONNECTION_AGE_SECONDS": "0",
        }
    )
    options = dict(server_options(s))
    assert options["grpc.max_receive_message_length"] == 65536
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.max_connection_age_ms"] == 2**31 - 1  # 0: no limit
    assert options["grpc.max_connection_idle_ms"] == 600_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert pool_size(s) == 8 + 10 + 30 + RESERVE
    assert maximum_concurrent_rpcs(s) == 2 * pool_size(s)


def test_a_limit_out_of_range_refuses_the_start() -> None:
    with pytest.raises(SettingsError, match="SCHEDULER_GRPC_MAX_STREAMS"):
        scheduler_settings({"SCHEDULER_GRPC_MAX_STREAMS": "0"})
