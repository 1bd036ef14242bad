"""Settings from the environment: typed, validated once at start-up, refused when wrong.

Every service reads the same shape of settings, prefixed by its name, so one page of docs
(README "Configuration") covers all three: ``SCHEDULER_DATABASE_URL``, ``INVENTORY_LISTEN``,
``NOTIFY_GRPC_WORKERS`` and so on. Peers are addressed as ``<PEER>_ADDRESS``; ``LOG_LEVEL`` and
``LOG_FORMAT`` and the token settings ``AUTH_*`` (docs/security.md) are shared (tracing reads
the standard ``OTEL_*`` variables: services/common/tracing.py). Each service declares its own
settings class (``services/<name>/settings.py``) on top of :class:`ServiceSettings`;
pydantic-settings types and validates the fields.

Why the loader is stricter than pydantic-settings alone: a misspelt variable
(``SCHEDULER_GRPC_WORKER=4``) would otherwise be ignored and the service would start with a
default the operator did not choose. Every ``<SERVICE>_*`` variable must name a setting, and
a bad value names its variable; either refuses the start with :class:`SettingsError`.

Settings are built from an explicit mapping (``os.environ`` by default) rather than read by
the library from the process environment, so in-process tests can start several servers with
different settings side by side.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from services.common.outbox_relay import RelayPolicy

DEFAULT_PORTS = {"scheduler": 50051, "inventory": 50052, "notify": 50053}
REPO_ROOT = Path(__file__).resolve().parents[2]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["json", "text"]
_SHARED = frozenset({"log_level", "log_format"})  # one variable for all three services


class SettingsError(ValueError):
    """One or more environment variables are unknown or hold a bad value: the service must
    not start. The message names every variable at fault."""


class FromMapping(BaseSettings):
    """Settings built only from what ``load`` passes in (it has already read the given
    environment mapping), never from the process environment behind its back."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class ServiceSettings(FromMapping):
    """What every service reads. Subclasses set ``service`` and add their own fields; a field
    ``grpc_workers`` of the scheduler is the variable ``SCHEDULER_GRPC_WORKERS``."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")
    service: ClassVar[str]

    database_url: str = ""  # empty: SQLite under var/ (see ``default_database_url``)
    listen: str = ""  # empty: 127.0.0.1 on the service's default port
    # capacity and limits of the gRPC server (services/common/limits.py, docs/operations.md
    # "Limits"): unary calls run on ``grpc_workers`` threads, streams on their own slots
    grpc_workers: int = Field(16, ge=1, le=512, description="unary calls served at once")
    grpc_max_queued: int = Field(64, ge=0, le=10_000, description="unary calls that may wait")
    grpc_queue_timeout_seconds: float = Field(5.0, ge=0, le=600)
    grpc_max_streams: int = Field(100, ge=1, le=10_000, description="streams open at once")
    grpc_max_streams_per_caller: int = Field(20, ge=1, le=10_000)
    grpc_max_message_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    grpc_keepalive_seconds: float = Field(60.0, gt=0, le=24 * 3600)
    grpc_keepalive_timeout_seconds: float = Field(20.0, gt=0, le=600)
    grpc_min_ping_interval_seconds: float = Field(10.0, ge=0, le=3600)
    grpc_max_connection_idle_seconds: float = Field(600.0, ge=0)  # 0: never closed for idling
    grpc_max_connection_age_seconds: float = Field(1800.0, ge=0)  # 0: no age limit
    grpc_max_connection_age_grace_seconds: float = Field(60.0, ge=0, le=3600)
    # kept open: at least the unary workers (16) and the audit trail's read writers (4), so a
    # busy process does not open and close overflow connections (up to as many again) per call
    db_pool_size: int = Field(20, ge=1, le=500, description="database connections")
    # processes serving the one port (services/common/processes.py, docs/operations.md
    # "Several processes per service"): above 1 the started process binds the port with
    # SO_REUSEPORT and starts that many workers, each a whole service; PostgreSQL only
    processes: int = Field(1, ge=1, le=64, description="processes serving the port")
    # set by that parent for its workers: listen with SO_REUSEPORT, sharing the port
    reuse_port: bool = False
    shutdown_grace_seconds: float = Field(10.0, ge=0, le=600)
    # run this service's background jobs (APScheduler); off in in-process tests, which call
    # the job bodies with an injected clock instead.
    jobs: bool = True
    # where the audit trail's records are linked into its chain: a keeper process beside this
    # one (services/common/audit/keeper.py says why) or a thread of this process (in-process
    # tests, which start and stop many servers)
    audit_linker: Literal["process", "thread"] = "process"
    # the peers' addresses, read from ``<PEER>_ADDRESS`` (not prefixed with this service)
    peers: Mapping[str, str] = Field(default_factory=dict)
    log_level: LogLevel = "INFO"  # ``LOG_LEVEL``, shared by the three services
    # ``LOG_FORMAT``, shared: one JSON object per line (every deployment file sets it) or one
    # readable line (the default: a terminal, ``make run``); services/common/logs.py
    log_format: LogFormat = "text"
    # Prometheus ``/metrics`` on host:port (port 0: any free port); empty: not served. Off by
    # default so that tests and a second checkout never fight over a port; deploy/ sets it.
    metrics_listen: str = ""
    # answer server reflection (grpcurl, buf curl); like health, it needs no token
    reflection: bool = True
    # Bearer tokens (docs/security.md): shared, unprefixed ``AUTH_*`` variables. The issuer is
    # required to serve (checked when the service is built, not here: ``seed`` needs none).
    auth_issuer: str = ""
    auth_audience: str = Field("infusion-platform", min_length=1)
    auth_jwks_url: str = ""  # empty: the issuer's discovery document names it
    auth_token_url: str = ""  # empty: the issuer's discovery document names it
    auth_roles_file: str = ""  # empty: services/common/auth/roles.yaml
    auth_leeway_seconds: float = Field(30.0, ge=0, le=300)
    auth_claim_organisation: str = Field("org", min_length=1)
    auth_claim_sites: str = Field("sites", min_length=1)
    auth_claim_roles: str = Field("roles", min_length=1)
    auth_claim_scope: str = Field("scope", min_length=1)
    auth_claim_client_id: str = Field("azp", min_length=1)
    # this service's own identity for its calls to peers (client credentials)
    client_id: str = ""  # empty: the service's name
    client_secret: SecretStr = SecretStr("")
    # TLS (services/common/tls.py, docs/security.md "Transport"), PEM files re-read when they
    # change: the service's certificate chain and key, served on its gRPC and metrics
    # listeners and presented to peers as its client certificate (one identity per service)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # set: callers must present a certificate that chains to one of these CAs (mTLS)
    tls_client_ca_file: str = ""
    # set: calls to peers use TLS and verify them against these CAs (by their service name)
    tls_ca_file: str = ""
    # plaintext off loopback is refused at start (a listener, a call to a peer) unless this
    insecure_listen: bool = False
    # a plaintext listener answering grpc.health.v1 only, for probes that cannot do TLS
    # (Kubernetes' gRPC probe); empty: none (health is served on LISTEN as well)
    health_listen: str = ""

    @model_validator(mode="before")
    @classmethod
    def _defaults_of_this_service(cls, data: Any) -> Any:
        """The database and address defaults depend on which service this is."""
        if isinstance(data, dict):
            data = dict(data)
            data["database_url"] = data.get("database_url") or default_database_url(cls.service)
            data["listen"] = data.get("listen") or f"127.0.0.1:{DEFAULT_PORTS[cls.service]}"
        return data

    @field_validator("tls_key_file", "tls_client_ca_file")
    @classmethod
    def _needs_certificate(cls, value: str, info: ValidationInfo) -> str:
        """A key goes with a certificate, and requiring client certificates needs TLS."""
        certificate = info.data.get("tls_cert_file", "")
        if value and not certificate:
            raise ValueError(f"needs {cls.variable('tls_cert_file')} as well")
        if info.field_name == "tls_key_file" and certificate and not value:
            raise ValueError(f"required with {cls.variable('tls_cert_file')}")
        return value

    @field_validator("auth_issuer", "auth_jwks_url", "auth_token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # kept exactly as given: a token's ``iss`` must equal AUTH_ISSUER character for
        # character (some providers end it with a slash)
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("an http(s):// URL")
        return value

    @model_validator(mode="after")
    def _processes_need_postgresql(self) -> ServiceSettings:
        """Several processes share one database only on PostgreSQL: SQLite would serialise
        their writes on one file lock and time them out, and the jobs' claims (SKIP LOCKED)
        are PostgreSQL's."""
        if self.processes > 1 and not self.database_url.startswith("postgresql"):
            raise ValueError(
                f"{self.variable('processes')}={self.processes} needs a PostgreSQL "
                f"{self.variable('database_url')}: with SQLite run one process"
            )
        return self

    def peer(self, name: str) -> str:
        """The address of another service (``INVENTORY_ADDRESS`` etc.)."""
        return self.peers[name]

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable behind a field."""
        if field in _SHARED or field.startswith("auth_"):
            return field.upper()
        return f"{cls.service.upper()}_{field.upper()}"

    @classmethod
    def variables(cls) -> set[str]:
        """Every variable this service reads (the deploy checks compare manifests with it)."""
        own = {cls.variable(f) for f in cls.model_fields if f != "peers"}
        return own | {f"{name.upper()}_ADDRESS" for name in DEFAULT_PORTS if name != cls.service}


S = TypeVar("S", bound=ServiceSettings)


def default_database_url(service: str) -> str:
    var = REPO_ROOT / "var"
    return f"sqlite:///{var / f'{service}.db'}"


def load(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """The settings of ``cls.service`` from ``environ`` (the process environment by default).

    Raises SettingsError naming every unknown ``<SERVICE>_*`` variable and every bad value.
    ``<SERVICE>_ADDRESS`` is allowed: it is how the *other* services find this one, and
    launchers pass one environment to all three.
    """
    env = os.environ if environ is None else environ
    prefix = f"{cls.service.upper()}_"
    by_variable = {cls.variable(f): f for f in cls.model_fields if f != "peers"}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in env.items():
        if name in by_variable:
            values[by_variable[name]] = value
        elif (name.startswith(prefix) and name != f"{prefix}ADDRESS") or name.startswith("AUTH_"):
            problems.append(f"{name}: unknown setting (see README, Configuration)")
    values["peers"] = {
        peer: env.get(f"{peer.upper()}_ADDRESS", f"127.0.0.1:{port}")
        for peer, port in DEFAULT_PORTS.items()
        if peer != cls.service
    }
    try:
        settings = cls(**values)
    except ValidationError as error:
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            variable = cls.variable(field) if field in by_variable.values() else field
            shown = f"={values[field]!r}" if field in values else ""
            problems.append(f"{variable}{shown}: {item['msg']}")
        settings = None
    if problems:
        raise SettingsError(f"{cls.service} cannot start: " + "; ".join(sorted(problems)))
    assert settings is not None
    return settings


class RelayingSettings(ServiceSettings):
    """A service with an outbox relay to its peers (the scheduler, the inventory)."""

    # the relay's longest wait between tries of a row its peer refused or could not take
    # (services/common/outbox_relay.py: waits double from 1 s up to this)
    relay_retry_max_seconds: float = Field(300.0, ge=1, le=24 * 3600)

    def relay_policy(self) -> RelayPolicy:
        """The outbox relay's retry policy from ``relay_retry_max_seconds``."""
        from services.common.outbox_relay import RelayPolicy

        return RelayPolicy(retry_max=dt.timedelta(seconds=self.relay_retry_max_seconds))
