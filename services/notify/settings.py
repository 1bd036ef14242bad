"""Notify's settings: the shared shape (services/common/settings.py), its channels', its
dispatcher's and its stream's. docs/notify.md explains each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator

from services.common.settings import ServiceSettings, load
from services.notify.domain.webhook_target import WebhookAllowList


class NotifySettings(ServiceSettings):
    service: ClassVar[str] = "notify"

    # email: SMTP to this server; no host = email goes to the console channel (make run)
    smtp_host: str = ""
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = "notify@localhost"
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    smtp_timeout: float = Field(10.0, gt=0, le=300)
    # SMS provider HTTP API; no endpoint = SMS goes to the console channel
    sms_endpoint: str = ""
    sms_token: SecretStr = SecretStr("")
    sms_sender: str = ""
    http_timeout: float = Field(10.0, gt=0, le=300)
    # webhooks reach public addresses only; these networks / host:port are allowed anyway
    # (services/notify/domain/webhook_target.py, docs/notify.md "Webhook targets")
    webhook_allow_list: str = ""
    # dispatcher
    dispatch_interval_seconds: float = Field(1.0, gt=0, le=3600)
    dispatch_batch: int = Field(50, ge=1, le=10_000)
    dispatch_workers: int = Field(8, ge=1, le=256)
    max_attempts: int = Field(8, ge=1, le=1000)
    retry_base_seconds: float = Field(30.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)
    lease_seconds: float = Field(120.0, gt=0)
    # Subscribe stream
    heartbeat_seconds: float = Field(15.0, gt=0, le=3600)
    stream_poll_seconds: float = Field(0.5, gt=0, le=60)
    stream_idle_seconds: float = Field(1800.0, gt=0, le=7 * 24 * 3600)
    template_dir: str = ""

    @field_validator("webhook_allow_list")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        WebhookAllowList.parse(value)  # a bad entry refuses the start, naming the variable
        return value

    def webhook_allow(self) -> WebhookAllowList:
        return WebhookAllowList.parse(self.webhook_allow_list)


def load_settings(environ: Mapping[str, str] | None = None) -> NotifySettings:
    return load(NotifySettings, environ)
