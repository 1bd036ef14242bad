"""The prescriber's regimen work on the console's patient page, against real services with
the demo centre: the outcomes and the proposal of a plan, accepting it with a reason (a new
plan version, once however often the form is sent), an outcome review's decision, and the pages
refused to roles without the permissions and to another organisation.

The plan: 2 g/kg of Gammagard Liquid every 28 days at 70 kg, all on one day: 140 g. One day may
carry at most 1 g/kg (docs/clinical-rules.md#split-over-days), so the proposal, whatever the
outcomes say, is the cycle split over 140 ÷ 70 = 2 consecutive days of 1 g/kg, 70 g each."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from demo import centre
from demo.builder import Builder
from infusion.inventory.v1 import inventory_pb2_grpc
from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.auth.tokens import StaticToken
from services.common.channels import open_channel
from tests.integration.console_support import TODAY, Platform, running_platform, sign_in

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("console-regimen")) as running:
        yield running


@pytest.fixture(scope="module")
def plan(platform: Platform) -> pb.TherapyPlan:
    token = StaticToken(platform.issuer.issuer.role_token("prescriber", centre.ORG))
    inventory = inventory_pb2_grpc.InventoryServiceStub(
        open_channel(platform.inventory_address, None, token)
    )
    build = Builder(platform.scheduler("prescriber"), inventory, centre.ORG)
    _, made = build.enrol(
        "R-2GKG",
        platform.site_id,
        build.product_id("gammagard-liquid"),
        TODAY - dt.timedelta(days=60),
        measured_on=TODAY - dt.timedelta(days=7),
        weight="70",
        given="Rosa",
        family="Regimen",
        plan={"maintenance_dose": "2", "interval_days": 28},
    )
    return made


def client_as(platform: Platform, role: str, organisation: str = centre.ORG) -> TestClient:
    client = TestClient(platform.app, base_url=BASE)
    sign_in(client, role, organisation)
    return client


def form_fields(page: str, action: str) -> dict[str, str]:
    form = page.split(f'action="{action}"')[1].split("</form>")[0]
    return dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form))


def test_the_prescriber_reads_the_proposal_and_accepts_it_once(
    platform: Platform, plan: pb.TherapyPlan
) -> None:
    client = client_as(platform, "prescriber")
    patient = client.get(f"/patients/{plan.patient_id}")
    link = f"/patients/{plan.patient_id}/plans/{plan.id}/proposal"
    assert patient.status_code == 200 and link in patient.text
    page = client.get(link)
    assert page.status_code == 200, page.text[:1000]
    assert "Split over consecutive days" in page.text
    assert "70 g + 70 g on consecutive days" in page.text  # 140 g as 2 × 70 g
    assert "every 28 days" in page.text
    assert '<ol class="rationale"><li>' in page.text
    assert "Accept: create plan version 2" in page.text
    fields = form_fields(page.text, f"{link}/accept")
    # a reason is required: without one nothing changes
    refused = client.post(f"{link}/accept", data=fields)
    assert refused.status_code == 400 and "reason is required" in refused.text
    assert _version(platform, plan) == 1
    accepted = client.post(
        f"{link}/accept", data={**fields, "reason": "2 g/kg in one day"}, follow_redirects=False
    )
    assert accepted.status_code == 303, accepted.text[:1000]
    assert _version(platform, plan) == 2
    now = platform.scheduler().GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id)).therapy_plan
    assert (now.maintenance_dose, list(now.infusion_days)) == ("1", [0, 1])
    # the same form again (a double submit) makes no third version
    client.post(f"{link}/accept", data={**fields, "reason": "2 g/kg in one day"})
    assert _version(platform, plan) == 2
    shown = client.get(accepted.headers["location"])
    assert "Proposal accepted" in shown.text and "is now at version 2" in shown.text
    # within the maximum now: no proposal, said why
    again = client.get(link)
    assert "No proposal" in again.text and "Accept:" not in again.text


def test_an_outcome_review_decision_from_the_patient_page(
    platform: Platform, plan: pb.TherapyPlan
) -> None:
    client = client_as(platform, "prescriber")
    page = client.get(f"/patients/{plan.patient_id}")
    action = f"/patients/{plan.patient_id}/plans/{plan.id}/review"
    fields = form_fields(page.text, action)
    done = client.post(
        action,
        data={**fields, "decision": "continue", "reason": "grip stable"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text.split("<main")[1][:1500]
    assert "Review decision recorded" in client.get(done.headers["location"]).text
    # without a reason nothing is recorded
    refused = client.post(action, data={**fields, "decision": "continue", "reason": " "})
    assert refused.status_code == 400


def test_others_may_not(platform: Platform, plan: pb.TherapyPlan) -> None:
    link = f"/patients/{plan.patient_id}/plans/{plan.id}/proposal"
    coordinator = client_as(platform, "scheduling_coordinator")
    assert coordinator.get(link).status_code == 403
    assert link not in coordinator.get(f"/patients/{plan.patient_id}").text
    other = client_as(platform, "prescriber", organisation="other-org")
    assert other.get(link).status_code == 404
    # a plan under another patient's path is no plan of theirs
    prescriber = client_as(platform, "prescriber")
    demo_patient = prescriber.get("/patients").text
    someone = re.search(r'href="/patients/([^"]+)"', demo_patient)
    assert someone and someone.group(1) != plan.patient_id
    assert (
        prescriber.get(f"/patients/{someone.group(1)}/plans/{plan.id}/proposal").status_code == 404
    )


def _version(platform: Platform, plan: pb.TherapyPlan) -> int:
    got = platform.scheduler().GetTherapyPlan(pb.GetTherapyPlanRequest(id=plan.id))
    return got.therapy_plan.version
