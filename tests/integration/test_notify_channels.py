"""The real channel adapters against real local servers: an aiosmtpd SMTP server receives the
email (headers and both parts read back), a local HTTP server receives the webhook and checks
its HMAC signature, and a fake SMS provider over HTTP answers a temporary failure then success
(a retry is observed) or a permanent failure (no more retries)."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller
from google.protobuf.field_mask_pb2 import FieldMask

from infusion.notify.v1 import notify_pb2 as pb
from services.notify.adapters.channels import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Resolver,
    adapters_for,
    resolve,
)
from services.notify.domain.webhook_target import IPAddress
from services.notify.settings import NotifySettings

pytest.register_assert_rewrite("tests.integration.notify_conftest")
from tests.integration.errors import field_violations  # noqa: E402
from tests.integration.notify_conftest import (  # noqa: E402
    NOW,
    Factory,
    NotifyServer,
    config,
    create,
    lot_expiring,
    publish,
    reminder,
    rid,
)

pytest_plugins = ["tests.integration.notify_conftest"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a real SMTP server -------------------------------------------------------------------------


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_email_reaches_a_real_smtp_server(
    notify_factory: Factory, smtp: tuple[_Inbox, int]
) -> None:
    inbox, port = smtp
    server = _real(
        notify_factory,
        config(smtp_host="127.0.0.1", smtp_port=port, smtp_from="pharmacy@hospital.example"),
    )
    s = create(server, email="pat@example.org", display_name="Pat <Pharmacy>")
    n = publish(server, pb.TOPIC_APPOINTMENT_REMINDER, reminder(NOW + dt.timedelta(days=1)), [s.id])
    assert server.run_once() == 1
    (mail_from, rcpt, msg) = inbox.messages[0]
    assert mail_from == "pharmacy@hospital.example" and rcpt == ["pat@example.org"]
    assert msg["Subject"] == "Reminder: your appointment on Wed 25 Nov 2026 12:00 GMT"
    delivery = n.notification.deliveries[0]
    assert msg["Message-ID"] == f"<{delivery.id}@notify.infusion>"
    assert msg["X-Notification-Id"] == n.notification.id
    assert msg.is_multipart()
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "Royal Free Day Unit" in text and "Privigen" in text
    assert "<b>Royal Free Day Unit</b>" in html
    assert "Pat &lt;Pharmacy&gt;" in html  # autoescaped
    got = server.stub.GetNotification(pb.GetNotificationRequest(id=n.notification.id))
    assert got.notification.deliveries[0].status == pb.DELIVERY_STATUS_DELIVERED


def test_an_unreachable_smtp_server_is_a_temporary_failure(notify_factory: Factory) -> None:
    server = _real(notify_factory, config(smtp_host="127.0.0.1", smtp_port=free_port()))
    s = create(server)
    n = publish(server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id])
    server.run_once()
    (d,) = _deliveries(server, n.notification.id)
    assert d.status == pb.DELIVERY_STATUS_TEMPORARY_FAILURE
    assert "SMTP unavailable" in d.last_error


# --- HTTP servers: webhook receiver and SMS provider --------------------------------------------


@dataclass
class _Http:
    port: int
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    # status codes to answer, in order; 200 once exhausted
    script: list[int] = field(default_factory=list)
    # what it answers in the body (an internal service's secrets, say)
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def allowed(self) -> str:
        """NOTIFY_WEBHOOK_ALLOW_LIST naming this receiver (webhooks may not reach loopback
        otherwise)."""
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def http() -> Iterator[_Http]:
    with _http_server() as state:
        yield state


@pytest.fixture
def internal() -> Iterator[_Http]:
    """Stands for an internal service a webhook must not reach."""
    with _http_server() as state:
        yield state


@contextlib.contextmanager
def _http_server() -> Iterator[_Http]:
    state = _Http(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append((dict(self.headers.items()), body))
                code = state.script.pop(0) if state.script else 200
            self.send_response(code)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _real(factory: Factory, cfg: NotifySettings, resolver: Resolver = resolve) -> NotifyServer:
    """A server with the real adapters its config selects, not the fixture's recorders."""
    return factory(cfg, adapters_for(cfg, resolver))


def test_webhook_is_signed_and_carries_an_idempotency_key(
    notify_factory: Factory, http: _Http
) -> None:
    server = _real(notify_factory, config(webhook_allow_list=http.allowed))
    secret = "whsec-42"
    s = create(server, email="", webhook_url=http.url, webhook_secret=secret)
    n = publish(server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id]).notification
    assert [d.channel for d in n.deliveries] == [pb.CHANNEL_WEBHOOK]
    assert server.run_once() == 1
    headers, body = http.requests[0]
    timestamp = headers[TIMESTAMP_HEADER]
    assert timestamp == str(int(NOW.timestamp()))
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], "sha256=" + expected.hexdigest())
    assert headers[IDEMPOTENCY_HEADER] == n.deliveries[0].id
    doc = json.loads(body)
    assert doc["notification_id"] == n.id and doc["topic"] == "LOT_EXPIRING"
    assert doc["payload"]["lot_number"] == "LOT42"
    assert doc["payload"]["expiry_date"] == {"year": 2026, "month": 12, "day": 20}
    # a tampered body would not verify
    forged = hmac.new(secret.encode(), timestamp.encode() + b"." + body + b" ", hashlib.sha256)
    assert headers[SIGNATURE_HEADER] != "sha256=" + forged.hexdigest()


def test_webhook_5xx_is_retried_and_4xx_is_not(notify_factory: Factory, http: _Http) -> None:
    server = _real(notify_factory, config(webhook_allow_list=http.allowed))
    s = create(server, email="", webhook_url=http.url, webhook_secret="k")
    http.script = [503, 410]
    a = publish(server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id]).notification
    server.run_once()
    assert _deliveries(server, a.id)[0].status == pb.DELIVERY_STATUS_TEMPORARY_FAILURE
    server.clock.advance(dt.timedelta(minutes=5))
    server.run_once()
    (d,) = _deliveries(server, a.id)
    assert d.status == pb.DELIVERY_STATUS_PERMANENT_FAILURE and "410" in d.last_error
    assert len(http.requests) == 2
    # both requests carried the same idempotency key
    assert {h[IDEMPOTENCY_HEADER] for h, _ in http.requests} == {d.id}


def test_sms_provider_temporary_failure_then_success(notify_factory: Factory, http: _Http) -> None:
    server_real = _real(
        notify_factory, config(sms_endpoint=http.url, sms_token="tok", sms_sender="CLINIC")
    )
    s = create(server_real, email="", phone="+447911123456")
    http.script = [503]
    n = publish(
        server_real, pb.TOPIC_APPOINTMENT_REMINDER, reminder(NOW + dt.timedelta(days=3)), [s.id]
    ).notification
    assert server_real.run_once() == 1
    (d,) = _deliveries(server_real, n.id)
    assert d.status == pb.DELIVERY_STATUS_TEMPORARY_FAILURE and "503" in d.last_error
    server_real.clock.advance(dt.timedelta(minutes=2))
    assert server_real.run_once() == 1
    (d,) = _deliveries(server_real, n.id)
    assert d.status == pb.DELIVERY_STATUS_DELIVERED
    assert [a.outcome for a in d.attempts] == [
        pb.DELIVERY_STATUS_TEMPORARY_FAILURE,
        pb.DELIVERY_STATUS_DELIVERED,
    ]
    assert len(http.requests) == 2
    headers, body = http.requests[1]
    assert headers["Authorization"] == "Bearer tok"
    sent = json.loads(body)
    assert sent["to"] == "+447911123456" and sent["from"] == "CLINIC"
    assert sent["reference"] == d.id
    assert "Privigen" not in sent["body"] and len(sent["body"]) <= 160


def test_sms_provider_permanent_failure_is_not_retried(
    notify_factory: Factory, http: _Http
) -> None:
    server = _real(notify_factory, config(sms_endpoint=http.url))
    s = create(server, email="", phone="+447911123456")
    http.script = [400]
    n = publish(server, pb.TOPIC_APPOINTMENT_REMINDER, reminder(NOW), [s.id]).notification
    assert server.run_once() == 1
    for _ in range(3):
        server.clock.advance(dt.timedelta(hours=2))
        assert server.run_once() == 0
    (d,) = _deliveries(server, n.id)
    assert d.status == pb.DELIVERY_STATUS_PERMANENT_FAILURE and len(d.attempts) == 1
    assert len(http.requests) == 1


def _deliveries(server: NotifyServer, notification_id: str) -> list[pb.Delivery]:
    n = server.stub.GetNotification(pb.GetNotificationRequest(id=notification_id))
    return list(n.notification.deliveries)


# --- webhook targets (docs/notify.md, "Webhook targets") ----------------------------------------

REFUSED_AT_CREATION = [
    "http://127.0.0.1:8080/hook",
    "http://10.1.2.3/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8080/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://localhost:8080/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one number
    "http://100.64.0.7/hook",
    "http://[fd00::5]/hook",
    "https://0.0.0.0/hook",
]


@pytest.mark.parametrize("url", REFUSED_AT_CREATION)
def test_webhook_to_an_internal_address_is_refused_at_creation(
    notify_server: NotifyServer, url: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        create(notify_server, email="", webhook_url=url, webhook_secret="k")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["subscriber.webhook_url"]


def test_webhook_url_changed_to_loopback_is_refused(notify_server: NotifyServer) -> None:
    s = create(notify_server, webhook_url="https://hooks.example.org/x", webhook_secret="k")
    with pytest.raises(grpc.RpcError) as caught:
        notify_server.stub.UpdateSubscriber(
            pb.UpdateSubscriberRequest(
                subscriber=pb.Subscriber(id=s.id, etag=s.etag, webhook_url="http://127.1/x"),
                update_mask=FieldMask(paths=["webhook_url"]),
                request_id=rid(),
            )
        )
    assert field_violations(caught.value) == ["subscriber.webhook_url"]


def _resolving(names: dict[str, str]) -> Resolver:
    """A resolver that knows a few test names (and nothing else)."""

    def answer(host: str, port: int) -> list[IPAddress]:
        if host in names:
            return [ip_address(names[host])]
        raise OSError(f"unknown test name {host}")

    return answer


def _delivered_once(server: NotifyServer, url: str) -> pb.Delivery:
    s = create(server, email="", webhook_url=url, webhook_secret="whsec-1")
    n = publish(server, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id]).notification
    assert server.run_once() == 1
    (d,) = _deliveries(server, n.id)
    return d


REFUSED = (
    "webhook target refused: the host resolves to a loopback address, which webhooks may not "
    "reach unless the operator allow-lists it"
)


def test_a_name_resolving_to_loopback_is_refused_at_delivery(
    notify_factory: Factory, internal: _Http
) -> None:
    """The name passes creation (no DNS there); its address is checked when sending, and the
    delivery is dead-lettered at once with a fixed reason: nothing reaches the service."""
    resolver = _resolving({"hooks.example.test": "127.0.0.1"})
    server = _real(notify_factory, config(), resolver)
    d = _delivered_once(server, f"http://hooks.example.test:{internal.port}/hook")
    assert d.status == pb.DELIVERY_STATUS_PERMANENT_FAILURE
    assert d.last_error == REFUSED
    assert [a.error for a in d.attempts] == [REFUSED]
    assert internal.requests == []


def test_an_allow_listed_internal_receiver_gets_the_signed_webhook(
    notify_factory: Factory, http: _Http
) -> None:
    resolver = _resolving({"hooks.example.test": "127.0.0.1"})
    server = _real(notify_factory, config(webhook_allow_list="127.0.0.0/8"), resolver)
    d = _delivered_once(server, f"http://hooks.example.test:{http.port}/hook")
    assert d.status == pb.DELIVERY_STATUS_DELIVERED
    ((headers, body),) = http.requests
    assert headers["Host"] == f"hooks.example.test:{http.port}"  # the URL's, not the address
    expected = hmac.new(b"whsec-1", headers[TIMESTAMP_HEADER].encode() + b"." + body, "sha256")
    assert headers[SIGNATURE_HEADER] == "sha256=" + expected.hexdigest()


def test_a_redirect_is_not_followed(notify_factory: Factory, http: _Http, internal: _Http) -> None:
    http.script = [302]
    http.headers = {"Location": internal.url}
    server = _real(notify_factory, config(webhook_allow_list=http.allowed))
    d = _delivered_once(server, http.url)
    assert d.status == pb.DELIVERY_STATUS_PERMANENT_FAILURE
    assert d.last_error == "webhook answered HTTP 302: redirects are not followed"
    assert len(http.requests) == 1 and internal.requests == []


def test_the_receivers_answer_is_never_stored_or_returned(
    notify_factory: Factory, http: _Http
) -> None:
    http.script = [500, 404]
    http.body = b"root:x:0:0 db_password=hunter2"
    server = _real(notify_factory, config(webhook_allow_list=http.allowed))
    d = _delivered_once(server, http.url)
    assert (d.status, d.last_error) == (
        pb.DELIVERY_STATUS_TEMPORARY_FAILURE,
        "webhook answered HTTP 500",
    )
    server.clock.advance(dt.timedelta(hours=1))
    server.run_once()
    got = server.stub.ListNotifications(pb.ListNotificationsRequest())
    (d,) = got.notifications[0].deliveries
    assert [a.error for a in d.attempts] == [
        "webhook answered HTTP 500",
        "webhook answered HTTP 404",
    ]
    assert b"hunter2" not in got.SerializeToString()


def test_a_stored_url_now_refused_is_dead_lettered_and_the_subscriber_still_editable(
    notify_factory: Factory, internal: _Http
) -> None:
    """A subscriber made while the allow-list named its receiver; the operator removes it."""
    before = _real(notify_factory, config(webhook_allow_list=internal.allowed))
    s = create(before, email="", webhook_url=internal.url, webhook_secret="k")
    after = _real(notify_factory, config())
    n = publish(after, pb.TOPIC_LOT_EXPIRING, lot_expiring(), [s.id]).notification
    assert after.run_once() == 1
    (d,) = _deliveries(after, n.id)
    assert d.status == pb.DELIVERY_STATUS_PERMANENT_FAILURE and len(d.attempts) == 1
    assert d.last_error.startswith("webhook target refused: the host resolves to a loopback")
    assert internal.requests == []
    renamed = after.stub.UpdateSubscriber(
        pb.UpdateSubscriberRequest(
            subscriber=pb.Subscriber(id=s.id, etag=s.etag, display_name="Renamed"),
            update_mask=FieldMask(paths=["display_name"]),
            request_id=rid(),
        )
    ).subscriber
    assert (renamed.display_name, renamed.webhook_url) == ("Renamed", internal.url)
