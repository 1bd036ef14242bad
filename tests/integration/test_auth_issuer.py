"""The deployment path against a real HTTP issuer (the development issuer, as `make run` serves
it): services configured by settings alone find the keys and the token endpoint through the
discovery document, verify callers' tokens, and get their own tokens by client credentials,
cached; a service does not start without an issuer to trust."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from pydantic import SecretStr

from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from infusion.scheduler.v1 import scheduler_pb2_grpc
from services.common.auth.discovery import Discovery
from services.common.auth.service import ServiceAuth
from services.common.auth.tokens import ClientCredentials, StaticToken, TokenUnavailable
from services.common.channels import open_channel
from services.common.settings import SettingsError
from services.inventory.__main__ import build as build_inventory
from services.inventory.seed import seed_catalogue
from services.inventory.settings import load_settings as inventory_settings
from services.issuer.endpoints import make_server
from services.issuer.issuer import Issuer
from services.notify.settings import load_settings as notify_settings
from services.scheduler.__main__ import build as build_scheduler
from services.scheduler.settings import load_settings as scheduler_settings
from tests.e2e.harness import free_port
from tests.integration.builders import date, plan_message


@dataclass
class Served:
    issuer: Issuer
    url: str


@pytest.fixture
def served() -> Iterator[Served]:
    port = free_port()
    issuer = Issuer.fresh(f"http://127.0.0.1:{port}")
    server = make_server(issuer, "127.0.0.1", port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(issuer, issuer.url)
    finally:
        server.shutdown()
        server.server_close()


def test_discovery_names_the_keys_and_the_token_endpoint(served: Served) -> None:
    document = httpx.get(f"{served.url}/.well-known/openid-configuration").json()
    assert document["issuer"] == served.url
    assert document["jwks_uri"] == f"{served.url}/jwks.json"
    keys = httpx.get(document["jwks_uri"]).json()["keys"]
    assert [k["kid"] for k in keys] == [served.issuer.signing_key.kid]
    assert all("d" not in k for k in keys)  # public halves only


def test_client_credentials_are_granted_to_the_services_only(served: Served) -> None:
    secret = SecretStr(served.issuer.clients["scheduler"])
    tokens = ClientCredentials(Discovery(served.url), "scheduler", secret)
    first = tokens.token()
    assert tokens.token() == first and tokens.requests == 1  # cached until shortly before exp
    form = httpx.post(
        f"{served.url}/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "inventory",
            "client_secret": served.issuer.clients["inventory"],
        },
    )
    assert form.status_code == 200 and form.json()["token_type"] == "Bearer"
    wrong = ClientCredentials(f"{served.url}/token", "scheduler", SecretStr("guess"))
    with pytest.raises(TokenUnavailable, match="401"):
        wrong.token()
    refused = httpx.post(f"{served.url}/token", data={"grant_type": "password"})
    assert refused.json() == {"error": "unsupported_grant_type"}


def test_a_token_is_renewed_before_it_expires(served: Served) -> None:
    now = [1_000.0]
    secret = SecretStr(served.issuer.clients["inventory"])
    tokens = ClientCredentials(f"{served.url}/token", "inventory", secret, now=lambda: now[0])
    tokens.token()
    now[0] += 3600 - 61  # expires_in is an hour: still good for over a minute
    tokens.token()
    assert tokens.requests == 1
    now[0] += 2  # less than a minute left: renewed
    tokens.token()
    assert tokens.requests == 2


def test_a_call_whose_token_cannot_be_had_fails_as_unavailable(served: Served) -> None:
    tokens = ClientCredentials(f"{served.url}/token", "scheduler", SecretStr("wrong"))
    with open_channel(f"127.0.0.1:{free_port()}", None, tokens) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.ListProducts(inv.ListProductsRequest(), timeout=2)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


def environment(served: Served, service: str) -> dict[str, str]:
    env = served.issuer.service_environment()
    return {k: v for k, v in env.items() if k.startswith(("AUTH_", service.upper()))}


def test_services_built_from_settings_alone_trust_the_issuer_and_call_as_themselves(
    served: Served, database_url: str
) -> None:
    inv_settings = inventory_settings(
        {
            **environment(served, "inventory"),
            "INVENTORY_DATABASE_URL": database_url,
            "INVENTORY_LISTEN": "127.0.0.1:0",
            "INVENTORY_JOBS": "0",
            "INVENTORY_AUDIT_LINKER": "thread",
        }
    )
    inventory = build_inventory(inv_settings)
    inventory.start()
    seed_catalogue(inv_settings)
    url = (
        database_url.replace("test.db", "scheduler.db")
        if database_url.startswith("sqlite")
        else database_url
    )
    scheduler = build_scheduler(
        scheduler_settings(
            {
                **environment(served, "scheduler"),
                "SCHEDULER_DATABASE_URL": url,
                "SCHEDULER_LISTEN": "127.0.0.1:0",
                "SCHEDULER_JOBS": "0",
                "SCHEDULER_AUDIT_LINKER": "thread",
                "INVENTORY_ADDRESS": inventory.address,
            }
        )
    )
    scheduler.start()
    token = StaticToken(served.issuer.user_token(["prescriber", "administrator"], "org-1"))
    try:
        with open_channel(scheduler.address, None, token) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            site = stub.CreateSite(
                pb.CreateSiteRequest(
                    request_id="site-1",
                    site=pb.Site(organisation_id="org-1", display_name="U", time_zone="UTC"),
                )
            ).site
            patient = stub.CreatePatient(
                pb.CreatePatientRequest(
                    request_id="patient-1",
                    patient=pb.Patient(
                        organisation_id="org-1",
                        mrn="M-1",
                        family_name="Example",
                        birth_date=date(1970, 1, 1),
                        sex_at_birth=pb.SEX_AT_BIRTH_FEMALE,
                    ),
                )
            ).patient
            # the plan's product is checked at the inventory, with the scheduler's own token
            plan = stub.CreateTherapyPlan(
                pb.CreateTherapyPlanRequest(
                    request_id="plan-1",
                    therapy_plan=plan_message(patient.id, site.id, "privigen"),
                )
            ).therapy_plan
            assert plan.product_id == "privigen"
        with open_channel(scheduler.address, None, StaticToken("forged")) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListSites(pb.ListSitesRequest(organisation_id="org-1"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        scheduler.stop(0)
        inventory.stop(0)


def test_a_service_will_not_serve_without_an_issuer_or_its_credentials(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AUTH_ISSUER: required"):
        ServiceAuth.from_settings(notify_settings({}), calls_peers=False)
    settings = scheduler_settings({"AUTH_ISSUER": "https://id.example/realms/ig"})
    with pytest.raises(SettingsError, match="SCHEDULER_CLIENT_SECRET: required"):
        ServiceAuth.from_settings(settings, calls_peers=True)
    roles = tmp_path / "roles.yaml"
    roles.write_text("roles:\n  x:\n    permissions: [nothing.at.all]\n")
    env = {"AUTH_ISSUER": "https://id.example", "AUTH_ROLES_FILE": str(roles)}
    with pytest.raises(SettingsError, match="AUTH_ROLES_FILE: .*nothing.at.all"):
        ServiceAuth.from_settings(notify_settings(env), calls_peers=False)
    with pytest.raises(SettingsError, match="AUTH_ISUER: unknown setting"):
        notify_settings({"AUTH_ISUER": "https://id.example"})
    with pytest.raises(SettingsError, match="AUTH_ISSUER='id.example'"):
        notify_settings({"AUTH_ISSUER": "id.example"})


def test_the_process_exits_2_naming_the_missing_issuer(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "NOTIFY_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
        "NOTIFY_LISTEN": f"127.0.0.1:{free_port()}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.notify"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "AUTH_ISSUER: required" in done.stderr
