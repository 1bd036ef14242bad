"""The console's settings from the environment, strict like the services' (services/common/
settings.py): every ``CONSOLE_*`` variable must name a setting, a bad value names its variable,
and either refuses the start (SettingsError).

The services are found where they are for their peers (``SCHEDULER_ADDRESS``,
``INVENTORY_ADDRESS``, ``NOTIFY_ADDRESS``); TLS towards them mirrors a service's towards its
peers: ``CONSOLE_TLS_CA_FILE`` (verify them, by their service name), ``CONSOLE_TLS_CERT_FILE``
and ``CONSOLE_TLS_KEY_FILE`` (the client certificate mutual TLS asks for); plaintext to an
address off this machine is refused unless ``CONSOLE_INSECURE_LISTEN`` (the user's token would
cross the network in the clear). Sign-in uses the platform's issuer (``AUTH_ISSUER``, shared
with the services) as an OpenID Connect provider."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import (
    DEFAULT_PORTS,
    FromMapping,
    LogFormat,
    LogLevel,
    SettingsError,
)
from services.common.tls import ClientTls, is_loopback

SERVICES = ("scheduler", "inventory", "notify")
DEFAULT_LISTEN = "127.0.0.1:8080"
PREFIX = "CONSOLE_"
# read without the prefix: shared with the services
_SHARED = {
    "auth_issuer": "AUTH_ISSUER",
    "auth_claim_organisation": "AUTH_CLAIM_ORGANISATION",
    "auth_claim_sites": "AUTH_CLAIM_SITES",
    "auth_claim_roles": "AUTH_CLAIM_ROLES",
    "log_level": "LOG_LEVEL",
    "log_format": "LOG_FORMAT",
}
_ADDRESSES = {f"{s}_address": f"{s.upper()}_ADDRESS" for s in SERVICES}


class ConsoleSettings(FromMapping):
    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    listen: str = DEFAULT_LISTEN
    scheduler_address: str = f"127.0.0.1:{DEFAULT_PORTS['scheduler']}"
    inventory_address: str = f"127.0.0.1:{DEFAULT_PORTS['inventory']}"
    notify_address: str = f"127.0.0.1:{DEFAULT_PORTS['notify']}"
    # TLS to the three services (their CA bundle), and the console's client certificate
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    insecure_listen: bool = False
    # OpenID Connect: the issuer (its discovery document), the console's client
    auth_issuer: str = ""
    # where the ID token says who the user is (dotted paths, as the services read the access
    # token: docs/security.md "Claims")
    auth_claim_organisation: str = Field("org", min_length=1)
    auth_claim_sites: str = Field("sites", min_length=1)
    auth_claim_roles: str = Field("roles", min_length=1)
    client_id: str = Field("console", min_length=1)
    client_secret: SecretStr = SecretStr("")  # empty: a public client (PKCE only)
    # where browsers reach the console (the redirect URI's base); empty: the request's own URL
    public_url: str = ""
    # signs the session cookie; empty: a random one per process (sessions end at a restart)
    session_secret: SecretStr = SecretStr("")
    session_max_age_seconds: int = Field(8 * 3600, ge=60, le=7 * 24 * 3600)
    # the cookie only over HTTPS (set it whenever the console is served over TLS)
    secure_cookies: bool = False
    # the wall screen's refresh
    wall_refresh_seconds: int = Field(30, ge=5, le=3600)
    # how long a call to a service may take
    call_timeout_seconds: float = Field(10.0, gt=0, le=120)
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"

    @field_validator("auth_issuer", "public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("an http(s):// URL")
        return value

    @model_validator(mode="after")
    def _key_with_certificate(self) -> ConsoleSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("CONSOLE_TLS_CERT_FILE and CONSOLE_TLS_KEY_FILE go together")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def address(self, service: str) -> str:
        return str(getattr(self, f"{service}_address"))

    def client_tls(self, service: str) -> ClientTls | None:
        """TLS towards ``service`` (checked against its service name), or None: plaintext,
        refused off loopback without CONSOLE_INSECURE_LISTEN."""
        if not self.tls_ca_file:
            address = self.address(service)
            if not is_loopback(address) and not self.insecure_listen:
                raise SettingsError(
                    f"console cannot start: {service.upper()}_ADDRESS={address} is off this "
                    "machine and CONSOLE_TLS_CA_FILE is not set: the user's token would cross "
                    "the network in the clear (CONSOLE_INSECURE_LISTEN=true allows it)"
                )
            return None
        return ClientTls(self.tls_ca_file, self.tls_cert_file, self.tls_key_file, service)

    @classmethod
    def variable(cls, field: str) -> str:
        return _SHARED.get(field) or _ADDRESSES.get(field) or f"{PREFIX}{field.upper()}"

    @classmethod
    def variables(cls) -> set[str]:
        return {cls.variable(f) for f in cls.model_fields}


def load_settings(environ: Mapping[str, str] | None = None) -> ConsoleSettings:
    """The console's settings; SettingsError naming every unknown ``CONSOLE_*`` variable and
    every bad value."""
    env = os.environ if environ is None else environ
    by_variable = {ConsoleSettings.variable(f): f for f in ConsoleSettings.model_fields}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in env.items():
        if name in by_variable:
            values[by_variable[name]] = value
        elif name.startswith(PREFIX):
            problems.append(f"{name}: unknown setting (see docs/console.md)")
    settings = None
    try:
        settings = ConsoleSettings(**values)
    except ValidationError as error:
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            variable = ConsoleSettings.variable(field) if field else "settings"
            problems.append(f"{variable}: {item['msg']}")
    if problems:
        raise SettingsError("console cannot start: " + "; ".join(sorted(problems)))
    assert settings is not None
    return settings
