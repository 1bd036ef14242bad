"""Channel adapters: each sends one message or raises TemporaryFailure / PermanentFailure.

The failure taxonomy decides retries: a refused recipient, a 4xx from a provider (other than
408/429) or a malformed address is permanent; a connection error, a timeout, a 5xx, 408/429 or
an SMTP 4xx reply is temporary and retried with backoff. A webhook whose target is not allowed
(webhook_target.py) or that answers with a redirect is permanent.

The SMS endpoint and the SMTP server are the operator's configuration and trusted; a webhook URL
is user data: it is checked again at each send, connected to only at the address checked, and
what the receiver answers is reduced to its status code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import smtplib
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from ipaddress import ip_address
from typing import Protocol, TextIO

import httpcore
import httpx

from services.notify.domain.model import Channel
from services.notify.domain.webhook_target import IPAddress, WebhookAllowList, address_refusal
from services.notify.settings import NotifySettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Notify-Signature"
TIMESTAMP_HEADER = "X-Notify-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class TemporaryFailure(Exception):
    """Worth retrying later."""


class PermanentFailure(Exception):
    """Retrying will not help: dead-letter."""


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: str
    notification_id: str
    topic: str
    channel: Channel
    destination: str
    subject: str
    text: str
    html: str
    webhook_secret: str
    sent_at: dt.datetime


class Adapter(Protocol):
    def send(self, message: OutgoingMessage) -> None: ...


class ConsoleAdapter:
    """Writes one line per message to stdout (what `make run` shows)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, message: OutgoingMessage) -> None:
        lines = message.text.splitlines()
        first = message.subject or (lines[0] if lines else "")
        stream = self._stream or sys.stdout
        stream.write(
            f"[notify] {message.channel.value.lower()} to {message.destination}"
            f" ({message.topic}): {first}\n"
        )
        stream.flush()


class SmtpAdapter:
    def __init__(self, config: NotifySettings) -> None:
        self.config = config

    def build(self, message: OutgoingMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.config.smtp_from
        email["To"] = message.destination
        email["Subject"] = message.subject
        email["Date"] = format_datetime(message.sent_at)
        # the delivery id: a re-send after a crash carries the same Message-ID
        email["Message-ID"] = f"<{message.delivery_id}@notify.infusion>"
        email["X-Notification-Id"] = message.notification_id
        email["X-Notification-Topic"] = message.topic
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        return email

    def send(self, message: OutgoingMessage) -> None:
        c = self.config
        email = self.build(message)
        try:
            with smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=c.smtp_timeout) as smtp:
                if c.smtp_starttls:
                    smtp.starttls()
                if c.smtp_user:
                    smtp.login(c.smtp_user, c.smtp_password.get_secret_value())
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            if codes and all(code >= 500 for code in codes):
                raise PermanentFailure(f"recipient refused: {error.recipients}") from error
            raise TemporaryFailure(f"recipient deferred: {error.recipients}") from error
        except smtplib.SMTPResponseException as error:
            text = f"SMTP {error.smtp_code}: {error.smtp_error!r}"
            if error.smtp_code >= 500:
                raise PermanentFailure(text) from error
            raise TemporaryFailure(text) from error
        except (smtplib.SMTPException, OSError) as error:
            raise TemporaryFailure(f"SMTP unavailable: {error}") from error


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``timestamp + "." + body`` as ``sha256=<hex>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _classify(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    text = f"{what} answered HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code in (408, 425, 429) or response.status_code >= 500:
        raise TemporaryFailure(text)
    raise PermanentFailure(text)


class WebhookTargetRefused(Exception):
    """The webhook's host resolved to an address webhooks may not reach (webhook_target.py)."""


Resolver = Callable[[str, int], list[IPAddress]]


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order."""
    found: dict[IPAddress, None] = {}
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        found[ip_address(str(sockaddr[0]))] = None
    return list(found)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's connector for webhooks: resolves the host once, refuses the connection if any
    address it resolves to is forbidden, and connects to the checked address itself — a DNS
    answer that changes between check and use (rebinding) cannot redirect it. TLS is started
    by httpcore afterwards with the URL's host name (SNI and certificate check), and the Host
    header is the URL's, so nothing else changes for the receiver."""

    def __init__(self, allow: WebhookAllowList, resolver: Resolver = resolve) -> None:
        self._allow = allow
        self._resolve = resolver
        self._connect = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._resolve(host, port)
        except OSError as error:
            raise httpcore.ConnectError(f"could not resolve {host}") from error
        for ip in addresses:
            refusal = address_refusal(ip, port, host, self._allow)
            if refusal is not None:
                raise WebhookTargetRefused(f"the host resolves to {refusal}")
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for ip in addresses:
            try:
                return self._connect.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise WebhookTargetRefused("webhooks are sent over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with :class:`GuardedBackend` as its connector, no proxy from the
    environment (a proxy would connect instead of us, unchecked) and no redirects (the client
    does not follow them)."""

    def __init__(self, allow: WebhookAllowList, resolver: Resolver = resolve) -> None:
        super().__init__(trust_env=False)
        # httpx builds its httpcore pool without a way to pass a network backend: rebuild it
        # with ours (tests/unit/test_webhook_targets.py shows every connection goes through it)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=GuardedBackend(allow, resolver),
        )


DISCARD_BYTES = 64 * 1024
DISCARD_SECONDS = 1.0


def _discard(response: httpx.Response) -> None:
    """Reads the receiver's answer and drops it, so that its connection goes back to the pool
    for the next delivery: httpcore closes a connection whose answer was left unread, and every
    delivery paid a new TCP connection (and TLS handshake). Bounded: an answer longer than
    ``DISCARD_BYTES``, or still arriving after ``DISCARD_SECONDS``, is left, and its connection
    closed. A failure here is not the delivery's: its status has been read."""
    seen = 0
    deadline = time.monotonic() + DISCARD_SECONDS
    try:
        for chunk in response.iter_raw():
            seen += len(chunk)
            if seen > DISCARD_BYTES or time.monotonic() > deadline:
                return
    except httpx.HTTPError:
        return


def _webhook_failure(status: int) -> Exception:
    """A fixed reason from the status alone: the receiver's body is never read, kept or shown
    (it could be anything an internal service answers)."""
    text = f"webhook answered HTTP {status}"
    if 300 <= status < 400:
        return PermanentFailure(f"{text}: redirects are not followed")
    if status in (408, 425, 429) or status >= 500:
        return TemporaryFailure(text)
    return PermanentFailure(text)


class WebhookAdapter:
    """POSTs the JSON body with a signature over timestamp and body, and the delivery id as
    Idempotency-Key so a receiver can drop a repeat after a crash or a lost reply. The target
    is checked at each connection (``GuardedTransport``; a kept-alive one goes on to the
    address checked); errors are stored as fixed reasons."""

    def __init__(
        self,
        config: NotifySettings,
        client: httpx.Client | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self._client = client or httpx.Client(
            timeout=config.http_timeout,
            transport=GuardedTransport(config.webhook_allow(), resolver),
            follow_redirects=False,
            trust_env=False,
        )

    def send(self, message: OutgoingMessage) -> None:
        body = message.text.encode()
        timestamp = str(int(message.sent_at.timestamp()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(message.webhook_secret, timestamp, body),
            IDEMPOTENCY_HEADER: message.delivery_id,
            "User-Agent": "infusion-notify/1",
        }
        try:
            with self._client.stream(
                "POST", message.destination, content=body, headers=headers
            ) as response:
                status = response.status_code
                _discard(response)  # read for the connection's sake, never kept
        except WebhookTargetRefused as error:
            raise PermanentFailure(f"webhook target refused: {error}") from None
        except httpx.TimeoutException:
            raise TemporaryFailure("webhook timed out") from None
        except httpx.HTTPError as error:
            raise TemporaryFailure(f"webhook unreachable ({type(error).__name__})") from None
        if not 200 <= status < 300:
            raise _webhook_failure(status)

    def close(self) -> None:
        self._client.close()


class SmsAdapter:
    """A provider HTTP API: POST {to, body, from, reference} as JSON with a bearer token."""

    def __init__(self, config: NotifySettings, client: httpx.Client | None = None) -> None:
        self.config = config
        self._client = client or httpx.Client(timeout=config.http_timeout)

    def send(self, message: OutgoingMessage) -> None:
        headers = {IDEMPOTENCY_HEADER: message.delivery_id}
        token = self.config.sms_token.get_secret_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = {
            "to": message.destination,
            "body": message.text,
            "from": self.config.sms_sender,
            "reference": message.delivery_id,
        }
        try:
            response = self._client.post(self.config.sms_endpoint, json=body, headers=headers)
        except httpx.HTTPError as error:
            raise TemporaryFailure(f"SMS provider unreachable: {error}") from error
        _classify(response, "SMS provider")

    def close(self) -> None:
        self._client.close()


def adapters_for(config: NotifySettings, resolver: Resolver = resolve) -> dict[Channel, Adapter]:
    console = ConsoleAdapter()
    return {
        Channel.EMAIL: SmtpAdapter(config) if config.smtp_host else console,
        Channel.SMS: SmsAdapter(config) if config.sms_endpoint else console,
        Channel.WEBHOOK: WebhookAdapter(config, resolver=resolver),
        Channel.CONSOLE: console,
    }
