"""TLS on real servers (services/common/tls.py, docs/security.md "Transport"): services call
each other over mTLS (SQLite and PostgreSQL), clients without an accepted certificate never
reach a handler, certificates and CAs rotated on disk are served to new connections without a
restart, a peer channel follows its own files, /metrics speaks HTTPS, the health listener
answers health only, and plaintext off loopback is refused."""

from __future__ import annotations

import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from services.common.clock import FixedClock
from services.common.server import GrpcService
from services.common.settings import SettingsError
from services.common.tls import ClientTls
from services.inventory.__main__ import build as build_inventory
from services.inventory.seed import seed_catalogue
from services.inventory.settings import load_settings as inventory_settings
from services.issuer.certificates import CertificateAuthority, CertificateFiles
from services.notify.__main__ import assemble
from services.notify.settings import load_settings as notify_settings
from services.scheduler.__main__ import build as build_scheduler
from services.scheduler.settings import load_settings as scheduler_settings
from tests.integration.builders import (
    date,
    make_patient,
    make_plan,
    make_site,
    measure,
    plan_message,
    product_id,
)
from tests.integration.conftest import NOW, Platform, scheduler_database_url
from tests.issuer import TestIssuer

LIST_SUBSCRIBERS = "/infusion.notify.v1.NotifyService/ListSubscribers"


@dataclass
class Pki:
    """Two unrelated CAs: ``ca`` the services trust, ``other`` nobody does."""

    root: Path
    ca: CertificateAuthority
    other: CertificateAuthority

    def issue(self, name: str, *, by: CertificateAuthority | None = None) -> CertificateFiles:
        return (by or self.ca).write(self.root / ("other" if by is self.other else "ca"), name)

    def server_env(self, service: str, files: CertificateFiles) -> dict[str, str]:
        prefix = service.upper()
        return {
            f"{prefix}_TLS_CERT_FILE": str(files.cert_file),
            f"{prefix}_TLS_KEY_FILE": str(files.key_file),
            f"{prefix}_TLS_CLIENT_CA_FILE": str(files.ca_file),
            f"{prefix}_TLS_CA_FILE": str(files.ca_file),
        }


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path, CertificateAuthority.fresh(), CertificateAuthority.fresh("Stranger CA"))


def client(files: CertificateFiles | None, ca_file: Path, name: str = "notify") -> ClientTls:
    """A client trusting ``ca_file``, presenting ``files``' certificate (none: None)."""
    if files is None:
        return ClientTls(str(ca_file), server_name=name)
    return ClientTls(str(ca_file), str(files.cert_file), str(files.key_file), name, 0)


def notify(issuer: TestIssuer, env: dict[str, str], tmp_path: Path) -> GrpcService:
    settings = notify_settings(
        {
            "NOTIFY_LISTEN": "127.0.0.1:0",
            "NOTIFY_DATABASE_URL": f"sqlite:///{tmp_path / 'notify.db'}",
            "NOTIFY_JOBS": "0",
            "NOTIFY_AUDIT_LINKER": "thread",
            "NOTIFY_SHUTDOWN_GRACE_SECONDS": "0",
            **env,
        }
    )
    service = assemble(settings, FixedClock(NOW), adapters={}, auth=issuer.service_auth("notify"))
    return service.service


@pytest.fixture
def tls_notify(
    issuer: TestIssuer, pki: Pki, tmp_path: Path
) -> Iterator[tuple[GrpcService, CertificateFiles]]:
    """Notify with TLS and client certificates required, its files where a test can rotate
    them."""
    files = pki.issue("notify")
    service = notify(issuer, pki.server_env("notify", files), tmp_path)
    service.start()
    try:
        yield service, files
    finally:
        service.stop(0)


def outcome(address: str, tls: ClientTls | None, issuer: TestIssuer) -> str:
    """OK, or the status code of one authenticated call."""
    token = StaticToken(issuer.integration_token())
    with open_channel(address, tls, token) as channel:
        try:
            channel.unary_unary(LIST_SUBSCRIBERS)(b"", timeout=5)
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


# ---- services over mTLS ----------------------------------------------------------------------


def test_the_scheduler_calls_the_inventory_over_mtls(
    database_url: str, issuer: TestIssuer, pki: Pki
) -> None:
    """The scheduler built as in production (its own peer channel, from its settings) reads
    products from an inventory that requires client certificates."""
    clock = FixedClock(NOW)
    inventory_files, scheduler_files, test_files = (
        pki.issue(n) for n in ("inventory", "scheduler", "client")
    )
    inv_settings = inventory_settings(
        {
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_LISTEN": "127.0.0.1:0",
            "INVENTORY_JOBS": "0",
            "INVENTORY_AUDIT_LINKER": "thread",
            **pki.server_env("inventory", inventory_files),
        }
    )
    inventory = build_inventory(inv_settings, clock, issuer.service_auth("inventory"))
    inventory.start()
    scheduler = build_scheduler(
        scheduler_settings(
            {
                "SCHEDULER_DATABASE_URL": scheduler_database_url(database_url),
                "SCHEDULER_LISTEN": "127.0.0.1:0",
                "SCHEDULER_JOBS": "0",
                "SCHEDULER_AUDIT_LINKER": "thread",
                "INVENTORY_ADDRESS": inventory.address,
                **pki.server_env("scheduler", scheduler_files),
            }
        ),
        clock,
        auth=issuer.service_auth("scheduler"),
    )
    scheduler.start()
    token = StaticToken(issuer.operator_token())
    channels = [
        open_channel(inventory.address, client(test_files, test_files.ca_file, "inventory"), token),
        open_channel(scheduler.address, client(test_files, test_files.ca_file, "scheduler"), token),
    ]
    try:
        seed_catalogue(inv_settings, clock)
        p = Platform(
            scheduler=scheduler_pb2_grpc.SchedulerServiceStub(channels[1]),
            inventory=inventory_pb2_grpc.InventoryServiceStub(channels[0]),
            scheduler_channel=channels[1],
            inventory_channel=channels[0],
            clock=clock,
            scheduler_address=scheduler.address,
            inventory_address=inventory.address,
            stop_inventory=lambda: None,
            forget_products=lambda: None,
            issuer=issuer,
            scheduler_service=inventory_pb2_grpc.InventoryServiceStub(channels[0]),
        )
        site = make_site(p)
        patient = make_patient(p)
        measure(p, patient.id, weight="70", height="165")
        issuer.verified.clear()
        # the plan's product is checked at the inventory, and so is the dose's vial spec
        plan = make_plan(p, plan_message(patient.id, site.id, product_id(p, "gammagard-liquid")))
        calculation = p.scheduler.CalculateDose(
            pb.CalculateDoseRequest(therapy_plan_id=plan.id, dosing_date=date(2026, 12, 1))
        ).calculation
        assert calculation.days[0].rounded_grams == "70"
        at_inventory = [c for s, c in issuer.verified if s == "inventory"]
        assert any(c.subject == "scheduler" and c.kind == "service" for c in at_inventory)
    finally:
        for channel in channels:
            channel.close()
        scheduler.stop(0)
        inventory.stop(0)


# ---- who gets in -----------------------------------------------------------------------------


def test_clients_without_an_accepted_certificate_never_reach_a_handler(
    tls_notify: tuple[GrpcService, CertificateFiles], pki: Pki, issuer: TestIssuer
) -> None:
    service, files = tls_notify
    ca = files.ca_file
    issuer.verified.clear()
    assert outcome(service.address, None, issuer) == "UNAVAILABLE"  # plaintext
    assert outcome(service.address, client(None, ca), issuer) == "UNAVAILABLE"  # no cert
    stranger = pki.issue("client", by=pki.other)
    assert outcome(service.address, client(stranger, ca), issuer) == "UNAVAILABLE"
    # a certificate of the right CA for the wrong name: the server is not who it says
    assert outcome(service.address, client(pki.issue("client"), ca, "inventory"), issuer) == (
        "UNAVAILABLE"
    )
    assert issuer.verified == []  # no token was even looked at
    assert outcome(service.address, client(pki.issue("client"), ca), issuer) == "OK"
    assert len(issuer.verified) == 1


def test_a_rotated_certificate_is_served_to_clients_that_reconnect(
    tls_notify: tuple[GrpcService, CertificateFiles], pki: Pki, issuer: TestIssuer, tmp_path: Path
) -> None:
    service, files = tls_notify
    old_ca = files.ca_file
    certificate = pki.issue("client")
    token = StaticToken(issuer.integration_token())
    before = open_channel(service.address, client(certificate, old_ca), token)
    call = before.unary_unary(LIST_SUBSCRIBERS)
    call(b"", timeout=5)

    # the server's certificate now comes from another CA (its key too); its callers' CA stays
    new = pki.issue("notify", by=pki.other)
    shutil.copy(new.key_file, files.key_file)
    shutil.copy(new.cert_file, files.cert_file)

    call(b"", timeout=5)  # the open connection is not disturbed
    before.close()
    # a client that reconnects meets the new certificate: trusting only the old CA, it is
    # refused; trusting the new one, it gets in
    assert outcome(service.address, client(certificate, old_ca), issuer) == "UNAVAILABLE"
    assert outcome(service.address, client(certificate, new.ca_file), issuer) == "OK"

    # the callers' CA rotates as well: certificates of the old one stop getting in
    shutil.copy(new.ca_file, files.ca_file)
    assert outcome(service.address, client(certificate, new.ca_file), issuer) == "UNAVAILABLE"
    newer_client = pki.issue("client", by=pki.other)
    assert outcome(service.address, client(newer_client, new.ca_file), issuer) == "OK"


def test_a_broken_pair_on_disk_keeps_the_served_certificate(
    tls_notify: tuple[GrpcService, CertificateFiles], pki: Pki, issuer: TestIssuer
) -> None:
    service, files = tls_notify
    certificate = pki.issue("client")
    files.key_file.write_bytes(pki.issue("unrelated").key_file.read_bytes())  # half-rotated
    assert outcome(service.address, client(certificate, files.ca_file), issuer) == "OK"
    files.cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\ntruncated")
    assert outcome(service.address, client(certificate, files.ca_file), issuer) == "OK"


def test_a_peer_channel_follows_its_certificate_files(
    tls_notify: tuple[GrpcService, CertificateFiles], pki: Pki, issuer: TestIssuer
) -> None:
    service, files = tls_notify
    mine = pki.issue("client", by=pki.other)  # not accepted by notify
    token = StaticToken(issuer.integration_token())
    channel = open_channel(service.address, client(mine, files.ca_file), token)
    call = channel.unary_unary(LIST_SUBSCRIBERS)
    with pytest.raises(grpc.RpcError) as refused:
        call(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    renewed = pki.issue("renewed")  # from the CA notify trusts: copied over the old files
    shutil.copy(renewed.key_file, mine.key_file)
    shutil.copy(renewed.cert_file, mine.cert_file)
    call(b"", timeout=5)  # the same channel and stub, a new connection with the new files
    channel.close()


# ---- the other listeners ---------------------------------------------------------------------


def _scrape(port: int, context: ssl.SSLContext) -> int:
    url = f"https://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5, context=context) as reply:
        return int(reply.status)


def _context(ca: Path, files: CertificateFiles | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the certificate names the service, not 127.0.0.1
    if files is not None:
        context.load_cert_chain(files.cert_file, files.key_file)
    return context


def test_metrics_and_health_listeners(issuer: TestIssuer, pki: Pki, tmp_path: Path) -> None:
    files = pki.issue("notify")
    env = {
        **pki.server_env("notify", files),
        "NOTIFY_METRICS_LISTEN": "127.0.0.1:0",
        "NOTIFY_HEALTH_LISTEN": "127.0.0.1:0",
    }
    service = notify(issuer, env, tmp_path)
    service.start()
    try:
        scraper = pki.issue("prometheus")
        assert service.metrics_port is not None and service.health_port is not None
        assert _scrape(service.metrics_port, _context(files.ca_file, scraper)) == 200
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _scrape(service.metrics_port, _context(files.ca_file, None))  # no certificate
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext HTTP
            urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5)
        # metrics follow a rotation too
        new = pki.issue("notify", by=pki.other)
        shutil.copy(new.key_file, files.key_file)
        shutil.copy(new.cert_file, files.cert_file)
        assert _scrape(service.metrics_port, _context(new.ca_file, scraper)) == 200

        # the health listener: plaintext, health only, the main listener's statuses
        with grpc.insecure_channel(f"127.0.0.1:{service.health_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            named = health_pb2.HealthCheckRequest(service="infusion.notify.v1.NotifyService")
            assert stub.Check(named, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as other:
                channel.unary_unary(LIST_SUBSCRIBERS)(b"", timeout=5)
            assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED
            health_port = service.health_port
            service.stop(0)
            service = None  # type: ignore[assignment]
        with (
            grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel,
            pytest.raises(grpc.RpcError),  # stopped with the service
        ):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    finally:
        if service is not None:
            service.stop(0)


def test_plaintext_off_loopback_is_refused_before_anything_listens(
    issuer: TestIssuer, tmp_path: Path
) -> None:
    service = notify(issuer, {"NOTIFY_LISTEN": "0.0.0.0:0"}, tmp_path)
    with pytest.raises(SettingsError, match="NOTIFY_LISTEN=0.0.0.0:0 is not a loopback"):
        service.start()
    assert service.port == 0
    allowed = notify(
        issuer, {"NOTIFY_LISTEN": "0.0.0.0:0", "NOTIFY_INSECURE_LISTEN": "true"}, tmp_path
    )
    allowed.start()
    try:
        assert allowed.port > 0
    finally:
        allowed.stop(0)


def test_a_service_will_not_call_a_peer_off_loopback_in_plaintext(
    issuer: TestIssuer, tmp_path: Path
) -> None:
    settings = inventory_settings(
        {
            "INVENTORY_DATABASE_URL": f"sqlite:///{tmp_path / 'inventory.db'}",
            "NOTIFY_ADDRESS": "notify.example.org:50053",
        }
    )
    with pytest.raises(SettingsError, match="NOTIFY_ADDRESS=notify.example.org:50053"):
        build_inventory(settings, FixedClock(NOW), issuer.service_auth("inventory"))
