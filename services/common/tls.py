"""TLS for the services' listeners and their calls to peers (docs/security.md, "Transport").

Certificates come from PEM files because every way of delivering them (cert-manager's
Secrets, a Vault agent, a compose volume) writes files and renews by replacing them. A service
notices a change and re-reads the files without restarting:

- its gRPC listener asks for the current certificate before each new connection's handshake
  (``grpc.dynamic_ssl_server_credentials``); connections already open keep theirs;
- its metrics listener makes each new connection's TLS context from the current files;
- its peer channels (services/common/channels.py) open new connections with the current
  client certificate and CA bundle.

A change is seen in the files' identity (inode, size, modification time: Kubernetes swaps a
Secret's files in one rename, so the inode changes even when the size does not). The files are
then read whole and checked — the chain parses, the key is the key of its first certificate,
the CA bundle holds a certificate — before anything replaces what is served: a half-written or
mismatched pair is logged once and the old certificate stays until the files are right.

Plaintext is for loopback: a listener on any other address without a certificate, or a call to
a peer off loopback without a CA bundle to verify it, stops the service at start
(:class:`SettingsError`) unless ``<SERVICE>_INSECURE_LISTEN`` says plaintext is meant.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.common.settings import ServiceSettings, SettingsError

log = logging.getLogger(__name__)
T = TypeVar("T")


class TlsFileError(ValueError):
    """A certificate, key or CA file cannot be read or is not what its setting says."""

    def __init__(self, path: str, reason: str, part: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.part = part  # which of PemFiles' files: cert_file, key_file or ca_file


# ---- the files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pem:
    """What one read of the files gave: a certificate chain and its key (either may be empty
    for a client without a certificate), and a CA bundle (empty: none)."""

    chain: bytes = b""
    key: bytes = b""
    ca: bytes = b""

    def summary(self) -> str:
        """The leaf certificate as the logs show it (no key material)."""
        if not self.chain:
            return "CA bundle only"
        leaf = x509.load_pem_x509_certificates(self.chain)[0]
        return (
            f"certificate {leaf.subject.rfc4514_string()} serial {leaf.serial_number:x} "
            f"valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a Secret volume's ..data swap shows here
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _certificates(data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _public(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    return cast(
        bytes,
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


@dataclass(frozen=True)
class PemFiles:
    """A certificate chain and its key, and a CA bundle: paths, any of them empty."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""

    def _paths(self) -> tuple[str, ...]:
        return (self.cert_file, self.key_file, self.ca_file)

    def stamp(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        return tuple(_stamp(p) if p else None for p in self._paths())

    def _file(self, part: str) -> bytes:
        path = getattr(self, part)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as error:
            raise TlsFileError(path, f"cannot be read ({error.strerror or error})", part) from None

    def read(self) -> Pem:
        """Read and check every file; TlsFileError names the first at fault."""
        chain = self._file("cert_file") if self.cert_file else b""
        key = self._file("key_file") if self.key_file else b""
        ca = self._file("ca_file") if self.ca_file else b""
        if self.ca_file and not _certificates(ca):
            raise TlsFileError(self.ca_file, "holds no PEM certificate", "ca_file")
        if self.cert_file:
            leaves = _certificates(chain)
            if not leaves:
                raise TlsFileError(self.cert_file, "holds no PEM certificate", "cert_file")
            try:
                private = serialization.load_pem_private_key(key, password=None)
            except (ValueError, TypeError):
                raise TlsFileError(
                    self.key_file, "holds no unencrypted PEM private key", "key_file"
                ) from None
            if _public(private) != _public(leaves[0]):
                raise TlsFileError(
                    self.key_file,
                    f"is not the key of the certificate in {self.cert_file}",
                    "key_file",
                )
        return Pem(chain, key, ca)


class Reloading(Generic[T]):
    """A value made from files (credentials, a TLS context, a channel), made again when the
    files change; when the new files are not right, the current value stays (logged once)."""

    def __init__(
        self,
        files: PemFiles,
        make: Callable[[Pem], T],
        what: str,
        *,
        recheck_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Reads the files now: a TlsFileError here is a start-up error for the caller."""
        self._files = files
        self._make = make
        self._what = what
        self._recheck = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = files.stamp()
        self._refused: object = None
        self._next_check = clock() + recheck_seconds
        pem = files.read()
        self.value = make(pem)
        log.info("%s: %s", what, pem.summary())

    def refresh(self) -> bool:
        """Look at the files (at most every ``recheck_seconds``); True when they changed and
        a new value replaced the old one."""
        if self._clock() < self._next_check:
            return False
        with self._lock:
            self._next_check = self._clock() + self._recheck
            stamp = self._files.stamp()
            if stamp == self._stamp:
                return False
            try:
                pem = self._files.read()
                value = self._make(pem)
            except (TlsFileError, ssl.SSLError, ValueError) as error:
                if stamp != self._refused:
                    self._refused = stamp
                    log.warning("%s: keeping the current certificate: %s", self._what, error)
                return False
            self._stamp = stamp
            self.value = value
        log.info("%s: reloaded, %s", self._what, pem.summary())
        return True


# ---- where plaintext is allowed --------------------------------------------------------------


def is_loopback(address: str) -> bool:
    """``host:port`` on this machine only (127.0.0.0/8, ::1, localhost)."""
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_plaintext(settings: ServiceSettings, what: str, remedy: str) -> None:
    if settings.insecure_listen:
        log.warning(
            "%s: plaintext at %s (%s=true)",
            settings.service,
            what,
            settings.variable("insecure_listen"),
        )
        return
    raise SettingsError(
        f"{settings.service} cannot start: {what} is not a loopback address and plaintext is "
        f"refused there: set {remedy}, or {settings.variable('insecure_listen')}=true if "
        'plaintext off loopback is meant (docs/security.md, "Transport")'
    )


def _as_settings_error(
    settings: ServiceSettings, error: TlsFileError, ca_field: str
) -> SettingsError:
    """The error named by its setting (``ca_field``: which setting the CA bundle came from)."""
    field = {"cert_file": "tls_cert_file", "key_file": "tls_key_file"}.get(error.part, ca_field)
    return SettingsError(
        f"{settings.service} cannot start: {settings.variable(field)}={error.path!r}: "
        f"{error.reason}"
    )


# ---- listeners -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTls:
    """The certificate every listener of a service but health serves, and the CA bundle its
    callers' certificates must chain to (mTLS) when one is set."""

    files: PemFiles
    service: str

    @property
    def client_certificates_required(self) -> bool:
        return bool(self.files.ca_file)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Asked for the current certificate before every new connection's handshake."""

        def configuration(pem: Pem) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration([(pem.key, pem.chain)], pem.ca or None)

        current = Reloading(self.files, configuration, f"{self.service} gRPC TLS")

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # runs on gRPC's own thread: never raise into it (None keeps the current one)
            try:
                return current.value if current.refresh() else None
            except Exception:
                log.exception("%s gRPC TLS: checking the certificate files failed", self.service)
                return None

        return grpc.dynamic_ssl_server_credentials(
            current.value,
            cast(Callable[[], grpc.ServerCertificateConfiguration], fetch),
            require_client_authentication=self.client_certificates_required,
        )

    def ssl_contexts(self, what: str) -> Reloading[ssl.SSLContext]:
        """For an HTTP listener: the context each new connection is wrapped with."""

        def context(pem: Pem) -> ssl.SSLContext:
            made = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            made.minimum_version = ssl.TLSVersion.TLSv1_2
            # the ssl module loads a chain from files only; they were just checked, and a
            # change in between fails this load (the old context stays) and is seen next time
            made.load_cert_chain(self.files.cert_file, self.files.key_file)
            if pem.ca:
                made.load_verify_locations(cadata=pem.ca.decode())
                made.verify_mode = ssl.CERT_REQUIRED
            return made

        return Reloading(self.files, context, f"{self.service} {what} TLS")


def server_tls(settings: ServiceSettings) -> ServerTls | None:
    """The listeners' TLS from the settings, the files read and checked now; None for
    plaintext, which is refused (SettingsError) on an address other than loopback unless
    ``<SERVICE>_INSECURE_LISTEN`` is set. The health listener is not counted: it answers
    grpc.health.v1 only (docs/security.md, "Transport")."""
    if settings.tls_cert_file:
        files = PemFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
        try:
            files.read()
        except TlsFileError as error:
            raise _as_settings_error(settings, error, "tls_client_ca_file") from None
        return ServerTls(files, settings.service)
    for field in ("listen", "metrics_listen"):
        address = getattr(settings, field)
        if address and not is_loopback(address):
            _refuse_plaintext(
                settings,
                f"{settings.variable(field)}={address}",
                f"{settings.variable('tls_cert_file')} and {settings.variable('tls_key_file')}",
            )
    return None


# ---- peer channels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTls:
    """How a channel verifies the server it calls, and what certificate it presents.

    ``server_name`` is the name the server's certificate must carry; the services set the
    peer's service name (``inventory``), whatever host the address names, so a certificate
    is checked for what it is, not for where it was reached. Empty: the address's host.
    ``recheck_seconds``: how often a channel looks for changed files."""

    ca_file: str
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    recheck_seconds: float = 1.0

    def files(self) -> PemFiles:
        return PemFiles(self.cert_file, self.key_file, self.ca_file)

    @classmethod
    def to_peer(cls, settings: ServiceSettings, peer: str) -> ClientTls | None:
        """A service's TLS towards ``peer``: its CA bundle, its own certificate as client
        certificate (one identity per service), the peer's service name. None (plaintext)
        without a CA bundle, refused (SettingsError) when the peer is off loopback unless
        ``<SERVICE>_INSECURE_LISTEN`` is set: the service's token would cross the network
        in the clear."""
        if not settings.tls_ca_file:
            address = settings.peer(peer)
            if not is_loopback(address):
                _refuse_plaintext(
                    settings,
                    f"{peer.upper()}_ADDRESS={address}",
                    f"{settings.variable('tls_ca_file')} to call {peer} over TLS",
                )
            return None
        tls = cls(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file, peer)
        try:
            tls.files().read()
        except TlsFileError as error:
            raise _as_settings_error(settings, error, "tls_ca_file") from None
        return tls

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def channel_credentials(pem: Pem) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(pem.ca or None, pem.key or None, pem.chain or None)
