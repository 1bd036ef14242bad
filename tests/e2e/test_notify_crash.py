"""The notify dispatcher is killed with SIGKILL mid-delivery and restarted: every notification
ends DELIVERED and none is lost. Deliveries in flight at the kill are re-sent after their lease
(with the same Idempotency-Key, so the receiver can drop the repeat). Notify serves TLS and
requires client certificates."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc
from services.common.health import wait_serving
from tests.e2e.harness import Pki, caller_channel, start_issuer

pytestmark = pytest.mark.e2e

TOTAL = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.lock = threading.Lock()


@pytest.fixture
def sink() -> Iterator[tuple[Sink, str]]:
    state = Sink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            time.sleep(0.1)  # a slow receiver: the kill lands while requests are in flight
            with state.lock:
                state.keys[self.headers["Idempotency-Key"]] += 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}/sink"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.notify"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_mid_delivery_loses_nothing(tmp_path: Path, sink: tuple[Sink, str]) -> None:
    state, url = sink
    port = free_port()
    address = f"127.0.0.1:{port}"
    issuer = start_issuer(tmp_path)
    pki = Pki.create(tmp_path)  # TLS, client certificates required
    env = {**os.environ, **issuer.service_environment(), **pki.environment(["notify"])}
    env.update(
        {
            "NOTIFY_DATABASE_URL": f"sqlite:///{tmp_path / 'notify.db'}",
            "NOTIFY_LISTEN": address,
            "NOTIFY_JOBS": "1",
            "NOTIFY_LEASE_SECONDS": "2",
            "NOTIFY_DISPATCH_INTERVAL_SECONDS": "0.1",
            "NOTIFY_DISPATCH_WORKERS": "4",
            "NOTIFY_DISPATCH_BATCH": "8",
            "NOTIFY_WEBHOOK_ALLOW_LIST": "127.0.0.1",  # the sink (loopback is refused otherwise)
        }
    )
    proc = _start(env)
    try:
        assert wait_serving(address, timeout=30, tls=pki.client("notify"))
        with caller_channel(issuer, "notify", address, "org", pki) as channel:
            stub = notify_pb2_grpc.NotifyServiceStub(channel)
            sub = stub.CreateSubscriber(
                pb.CreateSubscriberRequest(
                    subscriber=pb.Subscriber(
                        display_name="Pharmacy system",
                        time_zone="UTC",
                        kind=pb.SUBSCRIBER_KIND_STAFF,
                        webhook_url=url,
                        webhook_secret="k",
                    ),
                    request_id="crash-sub",
                ),
                timeout=10,
            ).subscriber
            for i in range(TOTAL):
                stub.Publish(
                    pb.PublishRequest(
                        topic=pb.TOPIC_LOW_STOCK,
                        subscriber_ids=[sub.id],
                        payload=pb.Payload(
                            low_stock=pb.LowStockPayload(site_id="s1", product_code=f"p{i}")
                        ),
                        request_id=f"crash-{i}",
                    ),
                    timeout=10,
                )
        deadline = time.monotonic() + 30
        while sum(state.keys.values()) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sum(state.keys.values()) >= 10, "the dispatcher never started sending"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = set(state.keys)
        assert len(before) < TOTAL, "everything was sent before the kill; nothing was tested"

        proc = _start(env)  # the same database: the restarted dispatcher picks up the rest
        assert wait_serving(address, timeout=30, tls=pki.client("notify"))
        with caller_channel(issuer, "notify", address, "org", pki) as channel:
            stub = notify_pb2_grpc.NotifyServiceStub(channel)
            deadline = time.monotonic() + 60
            while True:
                listed = stub.ListNotifications(
                    pb.ListNotificationsRequest(page_size=500), timeout=10
                ).notifications
                statuses = [d.status for n in listed for d in n.deliveries]
                if all(s == pb.DELIVERY_STATUS_DELIVERED for s in statuses):
                    break
                assert time.monotonic() < deadline, Counter(statuses)
                time.sleep(0.2)
        assert len(listed) == TOTAL and len(statuses) == TOTAL
        delivery_ids = {d.id for n in listed for d in n.deliveries}
        assert set(state.keys) == delivery_ids  # every delivery reached the receiver
        # repeats happen only for requests in flight at the kill (at most one batch per worker)
        repeats = sum(count - 1 for count in state.keys.values())
        assert repeats <= 8
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        issuer.stop()
