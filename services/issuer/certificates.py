"""A development certificate authority: TLS certificates for the three services and for a
client (tools, tests), made with ``cryptography`` (docs/security.md, "Transport").

Each certificate is written the way cert-manager writes a Secret, so the same settings read
both: ``<dir>/<name>/tls.crt`` (the certificate), ``tls.key`` (its key, owner-only) and
``ca.crt`` (the CA that signed it, which verifies the others). A service's certificate names
the service (``inventory``): its peers check that name, whatever address they reach it at, and
it serves as the service's client certificate too. ``client`` is a client-only certificate.

For development, tests and a local compose only: the CA key is a plain file next to them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICES = ("scheduler", "inventory", "notify")
CLIENT = "client"
CA_DAYS = 3650
DAYS = 365
RENEW_DAYS = 30  # `certs` issues again what expires sooner than this


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Infusion platform (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Whole files only (a temporary file renamed over the old one): a service re-reading
    its files never sees half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


@dataclass(frozen=True)
class CertificateFiles:
    """Where one certificate was written (the three values of the TLS settings)."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def fresh(
        cls, name: str = "Infusion development CA", days: int = CA_DAYS
    ) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """The CA kept in ``directory`` (``ca.crt``, ``ca.key``), made there the first time."""
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey), key_path
            return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)
        ca = cls.fresh()
        _write(key_path, _key_pem(ca.key), 0o600)
        _write(cert_path, ca.pem())
        return ca

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        name: str,
        *,
        dns_names: Iterable[str] = (),
        server: bool = True,
        days: float = DAYS,
    ) -> tuple[bytes, bytes]:
        """A certificate for ``name`` (and ``dns_names``) and its key, as PEM: for TLS
        servers and clients, or clients only (``server=False``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        names = dict.fromkeys([name, *dns_names])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def write(
        self,
        directory: Path,
        name: str,
        *,
        dns_names: Iterable[str] = (),
        server: bool = True,
        days: float = DAYS,
    ) -> CertificateFiles:
        """Issue for ``name`` into ``directory/name/`` (tls.crt, tls.key, ca.crt); the key
        first, so the pair is whole again as soon as the certificate lands."""
        chain, key = self.issue(name, dns_names=dns_names, server=server, days=days)
        files = CertificateFiles(
            directory / name / "tls.crt", directory / name / "tls.key", directory / name / "ca.crt"
        )
        _write(files.ca_file, self.pem())
        _write(files.key_file, key, 0o600)
        _write(files.cert_file, chain)
        return files


def renewal_due(cert_file: Path, ca: CertificateAuthority, renew_days: float = RENEW_DAYS) -> bool:
    """True when ``cert_file`` is missing (or holds no certificate), or was issued by ``ca``
    and expires within ``renew_days``. A certificate of another CA is someone's own: never
    due here."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return True
    try:
        certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    left = certificate.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return left < dt.timedelta(days=renew_days)


def development_certificates(
    directory: Path,
    services: Iterable[str] = SERVICES,
    *,
    dns_names: Iterable[str] = (),
    renew_days: float = RENEW_DAYS,
) -> list[str]:
    """The CA in ``directory`` (made the first time) and a certificate per service plus
    ``client``, issued when missing or due (renewal_due); returns the names issued now.
    ``dns_names`` are extra names for every service certificate (``localhost``: to reach them
    by that name)."""
    ca = CertificateAuthority.load_or_create(directory)
    issued = []
    extra = list(dns_names)
    for name in [*services, CLIENT]:
        if renewal_due(directory / name / "tls.crt", ca, renew_days):
            ca.write(directory, name, dns_names=extra, server=name != CLIENT)
            issued.append(name)
    return issued
