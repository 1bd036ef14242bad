"""Where notify's real channel adapters deliver in end-to-end tests: an SMTP server (aiosmtpd)
that keeps every message it accepts, and an HTTP webhook receiver that checks each request's
signature the way docs/notify.md tells a receiver to (HMAC-SHA256 of ``timestamp + "." +
body`` with the subscriber's secret, compared in constant time, stale timestamps refused) and
keeps the requests that verify. Both note when each message arrived, so a test can say when a
notification was delivered, not only that it was."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e.harness import free_port

# the headers notify's webhook adapter sends (docs/notify.md, "Adapters and settings")
# (kept lower-case: WebhookCall.headers are, since HTTP header names are case-insensitive)
SIGNATURE_HEADER = "x-notify-signature"
TIMESTAMP_HEADER = "x-notify-timestamp"
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_AGE_SECONDS = 300


# --- SMTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedEmail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    received_at: float  # time.time()

    @property
    def delivery_id(self) -> str:
        """Notify's Message-ID is ``<delivery id@notify.infusion>``."""
        return str(self.message["Message-ID"] or "").strip("<>").split("@", 1)[0]

    @property
    def notification_id(self) -> str:
        return str(self.message["X-Notification-Id"] or "")

    @property
    def topic(self) -> str:
        return str(self.message["X-Notification-Topic"] or "")

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if isinstance(part, EmailMessage) else ""


class SmtpSink:
    """An aiosmtpd handler on 127.0.0.1:``port`` (started by ``smtp_sink``)."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self._lock = threading.Lock()
        self._emails: list[ReceivedEmail] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        received = ReceivedEmail(
            str(envelope.mail_from or ""), tuple(envelope.rcpt_tos), parsed, time.time()
        )
        with self._lock:
            self._emails.append(received)
        return "250 Message accepted for delivery"

    def emails(self, topic: str = "", to: str = "") -> list[ReceivedEmail]:
        with self._lock:
            found = list(self._emails)
        return [
            m for m in found if (not topic or m.topic == topic) and (not to or to in m.rcpt_tos)
        ]


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# --- webhooks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookCall:
    hook: str  # the name in the URL path, /hook/<name>: whose secret verified it
    headers: dict[str, str]  # names lower-cased
    body: bytes
    doc: dict[str, Any]
    received_at: float  # time.time()

    @property
    def delivery_id(self) -> str:
        return self.headers.get(IDEMPOTENCY_HEADER, "")

    @property
    def notification_id(self) -> str:
        return str(self.doc.get("notification_id", ""))

    @property
    def topic(self) -> str:
        return str(self.doc.get("topic", ""))

    @property
    def payload(self) -> dict[str, Any]:
        payload = self.doc.get("payload") or {}
        assert isinstance(payload, dict)
        return payload


def verify(secret: str, headers: dict[str, str], body: bytes, now: float) -> str:
    """ "" when the request is genuine, else why not."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not timestamp.isdigit():
        return f"no {TIMESTAMP_HEADER}"
    if abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        return f"{TIMESTAMP_HEADER} {timestamp} is stale (a replay?)"
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    if not hmac.compare_digest(headers.get(SIGNATURE_HEADER, ""), "sha256=" + mac.hexdigest()):
        return "bad signature"
    return ""


class WebhookSink:
    """POST /hook/<name>: verified with the secret registered for <name>, recorded, 204.
    An unknown name is 404, a bad or stale signature 401 (kept in ``rejected``), which notify
    treats as a permanent failure: a test that checks its deliveries sees it. A signature's
    timestamp is judged against ``clock`` (seconds since the epoch; the real time by default, the
    services' when a test moves theirs: tests/e2e/moved_clock.py)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._calls: list[WebhookCall] = []
        self.rejected: list[tuple[str, str]] = []  # (hook, reason)
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def allow_list(self) -> str:
        """NOTIFY_WEBHOOK_ALLOW_LIST naming this sink: notify refuses loopback webhooks
        otherwise (docs/notify.md, "Webhook targets")."""
        return f"127.0.0.1:{self.port}"

    def register(self, name: str, secret: str) -> str:
        """The URL to give the subscriber whose webhook secret is ``secret``."""
        return self.url_on(self.port, name, secret)

    def url_on(self, port: int, name: str, secret: str) -> str:
        """``register`` before the sink listens (on ``port``)."""
        with self._lock:
            self._secrets[name] = secret
        return f"http://127.0.0.1:{port}/hook/{name}"

    def calls(self, hook: str = "", topic: str = "") -> list[WebhookCall]:
        with self._lock:
            found = list(self._calls)
        return [
            c for c in found if (not hook or c.hook == hook) and (not topic or c.topic == topic)
        ]

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> int:
        name = path.removeprefix("/hook/")
        with self._lock:
            secret = self._secrets.get(name) if path.startswith("/hook/") else None
        if secret is None:
            return 404
        why = verify(secret, headers, body, self.clock())
        if not why:
            try:
                doc = json.loads(body)
            except ValueError:
                why = "body is not JSON"
        with self._lock:
            if why:
                self.rejected.append((name, why))
                return 401
            self._calls.append(WebhookCall(name, headers, body, doc, time.time()))
        return 204

    def start(self, port: int = 0) -> None:
        """Listen on ``port`` (0: any free one); a test may hand out the URL first
        (``url_on``) and start the sink later, so that deliveries wait for it meanwhile."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                code = sink._receive(self.path, headers, body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def webhook_sink(clock: Callable[[], float] = time.time) -> Iterator[WebhookSink]:
    sink = WebhookSink(clock)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
