"""Channel adapters: each sends one message or raises TemporaryFailure / PermanentFailure.

The failure taxonomy decides retries: a refused recipient, a 4xx from a provider (other than
408/429) or a malformed address is permanent; a connection error, a timeout, a 5xx, 408/429 or
an SMTP 4xx reply is temporary and retried with backoff.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import smtplib
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol, TextIO

import httpx

from services.notify.domain.model import Channel
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


class WebhookAdapter:
    """POSTs the JSON body with a signature over timestamp and body, and the delivery id as
    Idempotency-Key so a receiver can drop a repeat after a crash or a lost reply."""

    def __init__(self, config: NotifySettings, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(timeout=config.http_timeout)

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
            response = self._client.post(message.destination, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise TemporaryFailure(f"webhook unreachable: {error}") from error
        _classify(response, "webhook")

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


def adapters_for(config: NotifySettings) -> dict[Channel, Adapter]:
    console = ConsoleAdapter()
    return {
        Channel.EMAIL: SmtpAdapter(config) if config.smtp_host else console,
        Channel.SMS: SmsAdapter(config) if config.sms_endpoint else console,
        Channel.WEBHOOK: WebhookAdapter(config),
        Channel.CONSOLE: console,
    }
