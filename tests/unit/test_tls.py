"""TLS settings and files (services/common/tls.py): what is refused at start, what a change
of the files does, and the development CA (services/issuer/certificates.py)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
from cryptography import x509

from services.common.settings import SettingsError
from services.common.tls import (
    ClientTls,
    PemFiles,
    Reloading,
    TlsFileError,
    is_loopback,
    server_tls,
)
from services.inventory.settings import load_settings as inventory_settings
from services.issuer.certificates import (
    CertificateAuthority,
    development_certificates,
    renewal_due,
)
from services.notify.settings import load_settings as notify_settings
from services.scheduler.settings import load_settings as scheduler_settings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.fresh()


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


# ---- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"SCHEDULER_TLS_CERT_FILE": "c"}, "SCHEDULER_TLS_KEY_FILE: Value error, required with"),
        ({"SCHEDULER_TLS_KEY_FILE": "k"}, "SCHEDULER_TLS_KEY_FILE='k': Value error, needs"),
        ({"SCHEDULER_TLS_CLIENT_CA_FILE": "ca"}, "SCHEDULER_TLS_CLIENT_CA_FILE='ca': Value"),
        ({"SCHEDULER_INSECURE_LISTEN": "maybe"}, "SCHEDULER_INSECURE_LISTEN='maybe'"),
    ],
)
def test_inconsistent_tls_settings_are_refused(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as refused:
        scheduler_settings(env)
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.3.4.5:1", True),
        ("[::1]:50051", True),
        ("localhost:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.7:50051", False),
        ("inventory:50052", False),
        (":50051", False),
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_plaintext_off_loopback_is_refused_naming_what_to_set() -> None:
    settings = notify_settings({"NOTIFY_LISTEN": "0.0.0.0:50053"})
    with pytest.raises(SettingsError) as refused:
        server_tls(settings)
    message = str(refused.value)
    assert "NOTIFY_LISTEN=0.0.0.0:50053 is not a loopback address" in message
    assert "NOTIFY_TLS_CERT_FILE and NOTIFY_TLS_KEY_FILE" in message
    assert "NOTIFY_INSECURE_LISTEN=true" in message
    # the metrics listener counts as well
    metrics = notify_settings({"NOTIFY_METRICS_LISTEN": "0.0.0.0:9153"})
    with pytest.raises(SettingsError, match="NOTIFY_METRICS_LISTEN=0.0.0.0:9153"):
        server_tls(metrics)


def test_insecure_listen_allows_plaintext_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    settings = notify_settings({"NOTIFY_LISTEN": "0.0.0.0:50053", "NOTIFY_INSECURE_LISTEN": "true"})
    with caplog.at_level(logging.WARNING):
        assert server_tls(settings) is None
    assert "plaintext at NOTIFY_LISTEN=0.0.0.0:50053" in caplog.text
    # loopback needs no switch, and the health listener is not counted
    assert server_tls(notify_settings({"NOTIFY_HEALTH_LISTEN": "0.0.0.0:9163"})) is None


def test_a_call_to_a_peer_off_loopback_needs_a_ca_bundle() -> None:
    settings = scheduler_settings({"INVENTORY_ADDRESS": "inventory:50052"})
    with pytest.raises(SettingsError) as refused:
        ClientTls.to_peer(settings, "inventory")
    assert "INVENTORY_ADDRESS=inventory:50052" in str(refused.value)
    assert "SCHEDULER_TLS_CA_FILE" in str(refused.value)
    assert ClientTls.to_peer(scheduler_settings({}), "inventory") is None  # loopback
    insecure = scheduler_settings(
        {"INVENTORY_ADDRESS": "inventory:50052", "SCHEDULER_INSECURE_LISTEN": "1"}
    )
    assert ClientTls.to_peer(insecure, "inventory") is None


def test_a_service_calls_its_peer_by_name_with_its_own_certificate(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    files = ca.write(tmp_path, "inventory")
    settings = inventory_settings(
        {
            "INVENTORY_TLS_CERT_FILE": str(files.cert_file),
            "INVENTORY_TLS_KEY_FILE": str(files.key_file),
            "INVENTORY_TLS_CA_FILE": str(files.ca_file),
            "NOTIFY_ADDRESS": "10.1.2.3:50053",
        }
    )
    tls = ClientTls.to_peer(settings, "notify")
    assert tls == ClientTls(
        str(files.ca_file), str(files.cert_file), str(files.key_file), server_name="notify"
    )
    assert tls.options() == [("grpc.ssl_target_name_override", "notify")]


def test_unreadable_or_wrong_files_name_their_variable(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    files = ca.write(tmp_path, "notify")
    other = ca.write(tmp_path, "other")
    base = {
        "NOTIFY_TLS_CERT_FILE": str(files.cert_file),
        "NOTIFY_TLS_KEY_FILE": str(files.key_file),
    }
    cases = {
        "NOTIFY_TLS_KEY_FILE": ({"NOTIFY_TLS_KEY_FILE": str(other.key_file)}, "is not the key of"),
        "NOTIFY_TLS_CERT_FILE": ({"NOTIFY_TLS_CERT_FILE": str(files.key_file)}, "no PEM cert"),
        "NOTIFY_TLS_CLIENT_CA_FILE": (
            {"NOTIFY_TLS_CLIENT_CA_FILE": str(tmp_path / "missing.crt")},
            "cannot be read",
        ),
    }
    for variable, (change, reason) in cases.items():
        with pytest.raises(SettingsError) as refused:
            server_tls(notify_settings({**base, **change}))
        assert f"{variable}=" in str(refused.value) and reason in str(refused.value), variable
    assert server_tls(notify_settings(base)) is not None


# ---- reloading -------------------------------------------------------------------------------


def test_a_change_is_read_once_and_a_bad_one_keeps_the_current_value(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = ca.write(tmp_path, "notify")
    pem = PemFiles(str(files.cert_file), str(files.key_file))
    reads: list[int] = []

    def make(read: object) -> int:
        value = serial(read.chain)  # type: ignore[attr-defined]
        reads.append(value)
        return value

    clock = Clock()
    current = Reloading(pem, make, "test", recheck_seconds=5, clock=clock)
    first = current.value
    assert not current.refresh() and reads == [first]  # nothing changed: nothing read

    good_key = files.key_file.read_bytes()
    ca.write(tmp_path, "elsewhere")
    files.key_file.write_bytes((tmp_path / "elsewhere" / "tls.key").read_bytes())  # mismatch
    assert not current.refresh()  # within recheck_seconds: not even looked at
    clock.now = 5
    with caplog.at_level(logging.WARNING):
        assert not current.refresh()
        clock.now = 10
        assert not current.refresh()  # the same bad files: not logged again
    assert current.value == first
    assert caplog.text.count("keeping the current certificate") == 1
    assert "is not the key of the certificate" in caplog.text

    files.key_file.write_bytes(good_key)  # repaired: the original pair again
    clock.now = 15
    assert current.refresh() and current.value == first

    renewed = ca.write(tmp_path, "notify")  # a renewal: new key and certificate
    clock.now = 20
    assert current.refresh()
    assert current.value == serial(renewed.cert_file.read_bytes()) != first


def test_missing_files_at_start_raise(tmp_path: Path) -> None:
    with pytest.raises(TlsFileError, match="cannot be read"):
        PemFiles(ca_file=str(tmp_path / "none.crt")).read()
    (tmp_path / "empty.crt").write_bytes(b"")
    with pytest.raises(TlsFileError, match="holds no PEM certificate"):
        PemFiles(ca_file=str(tmp_path / "empty.crt")).read()


# ---- the development CA ----------------------------------------------------------------------


def test_development_certificates_are_issued_once_and_renewed_when_due(tmp_path: Path) -> None:
    issued = development_certificates(tmp_path, dns_names=["localhost"])
    assert issued == ["scheduler", "inventory", "notify", "client"]
    assert development_certificates(tmp_path) == []  # all valid: nothing again
    ca = CertificateAuthority.load_or_create(tmp_path)
    leaf = x509.load_pem_x509_certificate((tmp_path / "inventory" / "tls.crt").read_bytes())
    leaf.verify_directly_issued_by(ca.certificate)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["inventory", "localhost"]
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u._name for u in usages} == {"serverAuth", "clientAuth"}
    client = x509.load_pem_x509_certificate((tmp_path / "client" / "tls.crt").read_bytes())
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u._name for u in usages} == {"clientAuth"}
    assert (tmp_path / "notify" / "tls.key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0

    short = ca.write(tmp_path, "notify", days=10)
    assert renewal_due(short.cert_file, ca) and not renewal_due(tmp_path / "scheduler/tls.crt", ca)
    # a certificate of another CA is left alone (an operator's own), a missing one is issued
    assert not renewal_due(tmp_path / "scheduler/tls.crt", CertificateAuthority.fresh())
    assert renewal_due(tmp_path / "nobody/tls.crt", ca)
    assert development_certificates(tmp_path) == ["notify"]
    renewed = x509.load_pem_x509_certificate(short.cert_file.read_bytes())
    assert renewed.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)
