"""Webhook targets: which addresses are refused, the operator's allow-list, the URL check at
subscriber creation, and the connector that resolves once and connects to what it checked."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import httpcore
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.common.settings import SettingsError
from services.notify.adapters.channels import (
    DISCARD_BYTES,
    GuardedBackend,
    GuardedTransport,
    OutgoingMessage,
    WebhookAdapter,
    WebhookTargetRefused,
)
from services.notify.domain.model import Channel, Subscriber, SubscriberKind, validate_subscriber
from services.notify.domain.webhook_target import (
    IPAddress,
    WebhookAllowList,
    classify,
    literal_address,
    url_refusal,
)
from services.notify.settings import load_settings

NOBODY = WebhookAllowList()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("10.20.30.40", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.10.10", "a link-local address"),
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("224.0.0.251", "a multicast address"),
        ("0.0.0.0", "the unspecified address"),
        ("240.0.0.1", "a private address"),  # reserved 240/4 counts as private in ipaddress
        ("192.0.2.10", "a private address"),  # documentation range
        ("::1", "a loopback address"),
        ("::", "the unspecified address"),
        ("fe80::1", "a link-local address"),
        ("fd00::5", "a private address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("ff02::1", "a multicast address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("64:ff9b::a00:1", "a private address"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", "a loopback address"),  # 6to4 of 127.0.0.1
    ],
)
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    assert classify(ip_address(address)) == kind


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert classify(ip_address(address)) is None


PRIVATE_V4 = st.one_of(
    st.integers(0x7F000000, 0x7FFFFFFF),  # 127/8
    st.integers(0x0A000000, 0x0AFFFFFF),  # 10/8
    st.integers(0xA9FE0000, 0xA9FEFFFF),  # 169.254/16
    st.integers(0xC0A80000, 0xC0A8FFFF),  # 192.168/16
    st.integers(0x64400000, 0x647FFFFF),  # 100.64/10
).map(IPv4Address)


@given(PRIVATE_V4)
def test_no_internal_ipv4_address_passes_in_any_dress(ip: IPv4Address) -> None:
    """As itself, IPv4-mapped, NAT64 or 6to4, and as a URL in dotted, single-number or hex
    notation: always refused without an allow-list."""
    dresses: list[IPAddress] = [
        ip,
        IPv6Address(f"::ffff:{ip}"),
        IPv6Address((0x64FF9B << 96) | int(ip)),
        IPv6Address((0x2002 << 112) | (int(ip) << 80)),
    ]
    assert all(classify(d) is not None for d in dresses)
    for host in (str(ip), str(int(ip)), hex(int(ip)), f"[::ffff:{ip}]"):
        assert url_refusal(f"http://{host}/hook", NOBODY) is not None


def test_numeric_host_forms_are_read_without_dns() -> None:
    assert literal_address("127.1") == ip_address("127.0.0.1")
    assert literal_address("0x7f000001") == ip_address("127.0.0.1")
    assert literal_address("hooks.example.org") is None
    assert literal_address("beef") is None  # a name, not hex without 0x


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/x",
        "http://LOCALHOST.:8080/x",
        "http://api.localhost/x",
        "http://[::1]/x",
        "https://169.254.169.254/latest",
        "ftp://hooks.example.org/x",
        "http://hooks.example.org:99999/x",
    ],
)
def test_urls_refused_without_dns(url: str) -> None:
    assert url_refusal(url, NOBODY) is not None


def test_public_names_wait_for_delivery_to_be_checked() -> None:
    assert url_refusal("https://hooks.example.org/notify", NOBODY) is None


def test_allow_list_networks_and_endpoints() -> None:
    allow = WebhookAllowList.parse("10.20.0.0/16, 127.0.0.1:8080 hooks.internal:443 [::1]:9000")
    assert url_refusal("http://10.20.5.5/x", allow) is None
    assert url_refusal("http://10.21.5.5/x", allow) is not None
    assert url_refusal("http://127.0.0.1:8080/x", allow) is None
    assert url_refusal("http://127.0.0.1:8081/x", allow) is not None  # another port
    assert url_refusal("http://[::1]:9000/x", allow) is None
    # a name on the list is allowed whatever it resolves to, on its port only
    assert allow.allows(ip_address("10.9.9.9"), 443, "hooks.internal")
    assert not allow.allows(ip_address("10.9.9.9"), 80, "hooks.internal")
    assert url_refusal("http://localhost:8080/x", allow) is not None  # not named


def test_metadata_is_allowed_only_when_named_exactly() -> None:
    metadata = ip_address("169.254.169.254")
    assert not WebhookAllowList.parse("169.254.0.0/16").allows(metadata, 80)
    assert WebhookAllowList.parse("169.254.0.0/16").allows(ip_address("169.254.1.1"), 80)
    assert WebhookAllowList.parse("169.254.169.254").allows(metadata, 80)
    assert not WebhookAllowList.parse("0.0.0.0/0").allows(metadata, 80)


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "hooks.internal", "host:0", "host:http", ":80"])
def test_a_bad_allow_list_entry_refuses_the_start(bad: str) -> None:
    with pytest.raises(SettingsError, match="NOTIFY_WEBHOOK_ALLOW_LIST"):
        load_settings({"NOTIFY_WEBHOOK_ALLOW_LIST": bad})


def test_subscriber_validation_names_the_field() -> None:
    s = Subscriber(
        external_ref="x",
        display_name="Hook",
        time_zone="Europe/London",
        webhook_url="http://10.0.0.8/hook",
        webhook_secret="k",
        kind=SubscriberKind.STAFF,
    )
    with pytest.raises(InvalidArgument) as caught:
        validate_subscriber(s)
    assert [v.field for v in caught.value.violations] == ["subscriber.webhook_url"]
    assert validate_subscriber(s, webhooks=WebhookAllowList.parse("10.0.0.0/8")).webhook_url
    assert validate_subscriber(s, webhooks=None).webhook_url  # unchanged URL: not re-checked


# --- the connector --------------------------------------------------------------------------------


class _Connects:
    """Stands in for httpcore's socket connector: records where it was asked to connect."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, *args: Any) -> httpcore.NetworkStream:
        self.calls.append((host, port))
        return httpcore.NetworkStream()


def _backend(
    answers: list[list[str]], allow: str = ""
) -> tuple[GuardedBackend, _Connects, list[str]]:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ip_address(a) for a in answers.pop(0)]

    backend = GuardedBackend(NOBODY, resolver)
    connects = _Connects()
    backend._connect = connects  # type: ignore[assignment]
    return backend, connects, asked


def test_resolves_once_and_connects_to_the_checked_address() -> None:
    """DNS rebinding: a second answer (loopback) is never asked for; the connection goes to
    the address that was checked."""
    backend, connects, asked = _backend([["93.184.216.34"], ["127.0.0.1"]])
    backend.connect_tcp("hooks.example.org", 443)
    assert asked == ["hooks.example.org"]
    assert connects.calls == [("93.184.216.34", 443)]


def test_any_forbidden_answer_refuses_the_connection() -> None:
    backend, connects, _ = _backend([["93.184.216.34", "10.0.0.7"]])
    with pytest.raises(WebhookTargetRefused, match="a private address"):
        backend.connect_tcp("hooks.example.org", 443)
    assert connects.calls == []


def test_an_unresolvable_name_is_a_connection_error() -> None:
    def nowhere(host: str, port: int) -> list[IPAddress]:
        raise OSError("no such name")

    with pytest.raises(httpcore.ConnectError):
        GuardedBackend(NOBODY, nowhere).connect_tcp("nowhere.example", 80)


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[str], list[bytes]]]:
    """A keep-alive receiver recording each POST's Host and body; its answer is 200 with the
    body the path names (``/short`` a small one, ``/long`` more than the webhook adapter
    reads), or 204 (any other path)."""
    bodies = {"/short": b'{"ok": true}', "/long": b"x" * (DISCARD_BYTES + 1)}
    hosts: list[str] = []
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            hosts.append(self.headers["Host"])
            received.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            body = bodies.get(self.path, b"")
            self.send_response(204 if not body else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], hosts, received
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_httpx_connects_through_the_guard(receiver: tuple[int, list[str], list[bytes]]) -> None:
    """The test name resolves only through the guard's resolver: a delivered request proves
    httpx used the guard; the Host header stays the URL's."""
    port, hosts, _ = receiver

    def test_names(host: str, p: int) -> list[IPAddress]:
        assert host == "hooks.example.test"
        return [ip_address("127.0.0.1")]

    allowed = GuardedTransport(WebhookAllowList.parse("127.0.0.1"), test_names)
    with httpx.Client(transport=allowed) as client:
        assert client.post(f"http://hooks.example.test:{port}/x").status_code == 204
    assert hosts == [f"hooks.example.test:{port}"]
    with (
        httpx.Client(transport=GuardedTransport(NOBODY, test_names)) as client,
        pytest.raises(WebhookTargetRefused),
    ):
        client.post(f"http://hooks.example.test:{port}/x")
    assert len(hosts) == 1


def test_webhook_deliveries_reuse_one_connection(
    receiver: tuple[int, list[str], list[bytes]],
) -> None:
    """The answer is read (and dropped) so the connection serves the next delivery: one
    connection, so one resolution and check, for several deliveries; an answer longer than the
    adapter reads still counts as delivered, and its connection is not reused."""
    port, _, received = receiver
    connections: list[str] = []

    def test_names(host: str, p: int) -> list[IPAddress]:
        connections.append(host)
        return [ip_address("127.0.0.1")]

    config = load_settings({"NOTIFY_WEBHOOK_ALLOW_LIST": "127.0.0.1"})
    adapter = WebhookAdapter(config, resolver=test_names)

    def send(path: str) -> None:
        adapter.send(
            OutgoingMessage(
                delivery_id="d1",
                notification_id="n1",
                topic="LOT_EXPIRING",
                channel=Channel.WEBHOOK,
                destination=f"http://hooks.example.test:{port}{path}",
                subject="",
                text='{"a": 1}',
                html="",
                webhook_secret="k",
                sent_at=dt.datetime(2026, 12, 3, tzinfo=dt.UTC),
            )
        )

    try:
        for path in ("/empty", "/short", "/empty", "/long"):
            send(path)
        assert len(connections) == 1
        send("/empty")
        assert len(connections) == 2
    finally:
        adapter.close()
    assert received == [b'{"a": 1}'] * 5
