"""Notify's own settings (NOTIFY_*), beyond the shape every service shares
(services.common.settings). Read once at start-up; docs/notify.md lists them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class NotifyConfig:
    # email: SMTP to this server; no host = email goes to the console channel (make run)
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "notify@localhost"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_timeout: float = 10.0
    # SMS provider HTTP API; no endpoint = SMS goes to the console channel
    sms_endpoint: str = ""
    sms_token: str = ""
    sms_sender: str = ""
    http_timeout: float = 10.0
    # dispatcher
    dispatch_interval_seconds: float = 1.0
    dispatch_batch: int = 50
    dispatch_workers: int = 8
    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    lease_seconds: float = 120.0
    # Subscribe stream
    heartbeat_seconds: float = 15.0
    stream_poll_seconds: float = 0.5
    template_dir: str = ""


def load_config(environ: Mapping[str, str] | None = None) -> NotifyConfig:
    env = os.environ if environ is None else environ
    d = NotifyConfig()

    def get(name: str, default: object) -> str:
        return env.get(f"NOTIFY_{name}", str(default))

    return NotifyConfig(
        smtp_host=get("SMTP_HOST", d.smtp_host),
        smtp_port=int(get("SMTP_PORT", d.smtp_port)),
        smtp_from=get("SMTP_FROM", d.smtp_from),
        smtp_user=get("SMTP_USER", d.smtp_user),
        smtp_password=get("SMTP_PASSWORD", d.smtp_password),
        smtp_starttls=get("SMTP_STARTTLS", "0").lower() in {"1", "true", "yes"},
        smtp_timeout=float(get("SMTP_TIMEOUT", d.smtp_timeout)),
        sms_endpoint=get("SMS_ENDPOINT", d.sms_endpoint),
        sms_token=get("SMS_TOKEN", d.sms_token),
        sms_sender=get("SMS_SENDER", d.sms_sender),
        http_timeout=float(get("HTTP_TIMEOUT", d.http_timeout)),
        dispatch_interval_seconds=float(
            get("DISPATCH_INTERVAL_SECONDS", d.dispatch_interval_seconds)
        ),
        dispatch_batch=int(get("DISPATCH_BATCH", d.dispatch_batch)),
        dispatch_workers=int(get("DISPATCH_WORKERS", d.dispatch_workers)),
        max_attempts=int(get("MAX_ATTEMPTS", d.max_attempts)),
        retry_base_seconds=float(get("RETRY_BASE_SECONDS", d.retry_base_seconds)),
        retry_max_seconds=float(get("RETRY_MAX_SECONDS", d.retry_max_seconds)),
        lease_seconds=float(get("LEASE_SECONDS", d.lease_seconds)),
        heartbeat_seconds=float(get("HEARTBEAT_SECONDS", d.heartbeat_seconds)),
        stream_poll_seconds=float(get("STREAM_POLL_SECONDS", d.stream_poll_seconds)),
        template_dir=get("TEMPLATE_DIR", d.template_dir),
    )
