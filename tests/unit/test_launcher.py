"""The launcher's addresses and port check (services/launcher.py): a taken port is refused
with the variable to change; wildcard listen addresses become addresses peers can reach."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from services.launcher import (
    Endpoint,
    LaunchError,
    endpoints_from_environment,
    free_endpoints,
    service_environment,
)


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_taken_port_is_refused_naming_the_variable(taken: int) -> None:
    with pytest.raises(LaunchError) as refused:
        Endpoint("notify", f"127.0.0.1:{taken}").check_free()
    assert f"notify cannot listen on 127.0.0.1:{taken} (NOTIFY_LISTEN)" in str(refused.value)


def test_a_wildcard_listen_on_a_taken_port_is_refused(taken: int) -> None:
    with pytest.raises(LaunchError, match="INVENTORY_LISTEN"):
        Endpoint("inventory", f"0.0.0.0:{taken}").check_free()


def test_a_free_port_passes_and_port_0_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Endpoint("scheduler", f"127.0.0.1:{port}").check_free()
    with pytest.raises(LaunchError, match="SCHEDULER_LISTEN=127.0.0.1:0: a fixed port"):
        Endpoint("scheduler", "127.0.0.1:0").check_free()


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("0.0.0.0:50051", "127.0.0.1:50051"),
        ("[::]:50051", "[::1]:50051"),
        ("localhost:50051", "localhost:50051"),
    ],
)
def test_peers_reach_a_wildcard_listen_on_loopback(listen: str, address: str) -> None:
    assert Endpoint("scheduler", listen).address == address


def test_each_child_is_told_where_its_peers_listen_whatever_the_address_variables_say() -> None:
    env = {"INVENTORY_LISTEN": "0.0.0.0:6002", "INVENTORY_ADDRESS": "127.0.0.1:50052"}
    endpoints = endpoints_from_environment(env)
    out = service_environment(endpoints, env)
    assert out["INVENTORY_ADDRESS"] == "127.0.0.1:6002"
    assert out["SCHEDULER_LISTEN"] == out["SCHEDULER_ADDRESS"] == "127.0.0.1:50051"


def test_the_demo_takes_free_ports_unless_told() -> None:
    chosen = {e.service: e for e in free_endpoints({"NOTIFY_LISTEN": "127.0.0.1:7003"})}
    assert chosen["notify"].listen == "127.0.0.1:7003"
    assert chosen["scheduler"].port not in (0, 50051, 50061)
    assert chosen["scheduler"].port != chosen["inventory"].port


def test_a_service_logging_json_is_seen_serving() -> None:
    import json

    from services.common.logs import readiness_line
    from services.launcher import SERVING_LINE, _message

    line = readiness_line("notify", "127.0.0.1:7003", "json")
    assert json.loads(line)["service"] == "notify"
    said = SERVING_LINE.match(_message(line))
    assert said is not None and said.groups() == ("notify", "127.0.0.1:7003")
    text = readiness_line("notify", "127.0.0.1:7003", "text")
    assert _message(text) == text == "notify SERVING on 127.0.0.1:7003"
