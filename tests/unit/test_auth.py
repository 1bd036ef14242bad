"""Authentication rules without a server: what roles grant, how claims become a caller, what
the token verifier refuses and caches, and the caller context."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from jwt.exceptions import PyJWKClientConnectionError

from services.common.auth.claims import ClaimNames, InvalidClaims, caller_from_claims
from services.common.auth.policy import declared_permissions
from services.common.auth.roles import Roles, RolesError
from services.common.auth.verifier import AuthUnavailable, InvalidToken, TokenVerifier
from services.common.identity import acting_as, current_caller, running_as, service_caller
from services.issuer.issuer import SigningKey
from services.issuer.memory import InMemoryKeys
from tests.auth_tokens import BAD_TOKENS
from tests.issuer import TestIssuer

ROLES = Roles.default()


# --- roles ---------------------------------------------------------------------------------------


def test_the_shipped_roles_load_and_every_declared_permission_is_granted_to_someone() -> None:
    granted = ROLES.named_permissions()
    assert declared_permissions() - granted == set()  # no RPC only a forged token could call
    assert set(ROLES.specs) >= {
        "nurse",
        "scheduling_coordinator",
        "prescriber",
        "pharmacist",
        "pharmacy_manager",
        "integration",
        "auditor",
        "administrator",
        "scheduler_service",
        "inventory_service",
        "notify_service",
    }


def test_products_are_read_by_every_caller_and_written_by_administrators_only() -> None:
    writers = [
        name for name, spec in ROLES.specs.items() if "inventory.products.write" in spec.permissions
    ]
    assert writers == ["administrator"]
    for role in ROLES.specs:
        assert "inventory.products.read" in ROLES.grant([role], []).permissions
    assert "inventory.products.read" in ROLES.grant(["a-role-nobody-configured"]).permissions


def test_a_user_holds_the_union_of_its_roles() -> None:
    both = ROLES.grant(["nurse", "prescriber"])
    assert both.kind == "user"
    assert {"scheduler.infusions.administer", "scheduler.doses.calculate"} <= both.permissions
    assert "inventory.stock.dispense" not in both.permissions


def test_the_auditor_reads_the_audit_trail_and_nothing_else() -> None:
    assert ROLES.grant(["auditor"]).permissions == {"audit.events.read"} | ROLES.authenticated


def test_a_hospital_system_holds_exactly_its_granted_scopes_within_its_role() -> None:
    grant = ROLES.grant(
        ["integration"], ["scheduler.patients.read", "inventory.products.write", "openid"]
    )
    assert grant.kind == "client"
    assert grant.permissions == {"scheduler.patients.read"} | ROLES.authenticated
    assert ROLES.grant(["integration"]).permissions == ROLES.authenticated


def test_a_service_identity_holds_its_service_role_only_even_with_other_roles() -> None:
    grant = ROLES.grant(["scheduler_service", "administrator"])
    assert grant.kind == "service"
    assert "inventory.stock.reserve" in grant.permissions
    assert "scheduler.sites.write" not in grant.permissions
    assert ROLES.grant(["notify_service"]).permissions == ROLES.authenticated


def test_a_roles_file_naming_an_unknown_permission_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text("roles:\n  clerk:\n    permissions: [scheduler.patients.reed]\n")
    with pytest.raises(RolesError, match="scheduler.patients.reed"):
        Roles.load(path)
    path.write_text("roles:\n  clerk:\n    permisions: [scheduler.patients.read]\n")
    with pytest.raises(RolesError, match="not a roles file"):
        Roles.load(path)
    with pytest.raises(RolesError, match="cannot read"):
        Roles.load(tmp_path / "missing.yaml")


def test_a_roles_file_replaces_the_shipped_roles(tmp_path: Path) -> None:
    path = tmp_path / "roles.yaml"
    path.write_text("roles:\n  ward-sister:\n    permissions: [scheduler.board.read]\n")
    roles = Roles.load(path)
    assert roles.grant(["ward-sister"]).permissions == {"scheduler.board.read"}
    assert roles.grant(["nurse"]).permissions == frozenset()  # not in this file


# --- claims --------------------------------------------------------------------------------------


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "u-1", "org": "org-1", "roles": ["nurse"], "jti": "t-1", "azp": "web", **extra}


def test_claims_become_a_caller() -> None:
    caller = caller_from_claims(claims(sites=["a", "b"]), ClaimNames(), ROLES)
    assert (caller.subject, caller.kind, caller.organisation_id) == ("u-1", "user", "org-1")
    assert caller.site_ids == {"a", "b"} and caller.roles == {"nurse"}
    assert (caller.client_id, caller.token_id) == ("web", "t-1")
    assert "scheduler.board.read" in caller.permissions


@pytest.mark.parametrize("sites", ["*", None])
def test_all_sites_of_the_organisation(sites: str | None) -> None:
    body = claims(sites=sites) if sites else claims()
    assert caller_from_claims(body, ClaimNames(), ROLES).site_ids is None


def test_an_empty_site_list_is_no_site_at_all_and_a_bare_string_is_refused() -> None:
    assert caller_from_claims(claims(sites=[]), ClaimNames(), ROLES).site_ids == frozenset()
    with pytest.raises(InvalidClaims, match="sites"):
        caller_from_claims(claims(sites="site-1"), ClaimNames(), ROLES)


def test_keycloak_claims_at_configured_paths() -> None:
    body = {
        "sub": "f3c1",
        "tenant": {"id": "org-9"},
        "realm_access": {"roles": ["pharmacist", "offline_access"]},
        "client_id": "infusion-web",
        "scope": "openid profile",
    }
    names = ClaimNames(organisation="tenant.id", roles="realm_access.roles", client_id="azp")
    caller = caller_from_claims(body, names, ROLES)
    assert caller.organisation_id == "org-9"
    assert caller.roles == {"pharmacist", "offline_access"}
    assert "inventory.stock.dispense" in caller.permissions
    assert caller.client_id == "infusion-web"  # no azp: client_id


def test_a_person_without_organisation_or_subject_is_refused() -> None:
    with pytest.raises(InvalidClaims, match="organisation"):
        caller_from_claims({"sub": "u-1", "roles": ["nurse"]}, ClaimNames(), ROLES)
    with pytest.raises(InvalidClaims, match="subject"):
        caller_from_claims({"org": "o", "roles": ["nurse"]}, ClaimNames(), ROLES)
    with pytest.raises(InvalidClaims, match="roles"):
        caller_from_claims(claims(roles={"nurse": True}), ClaimNames(), ROLES)


def test_a_service_acts_for_no_organisation_in_particular() -> None:
    caller = caller_from_claims(
        {"sub": "scheduler", "roles": ["scheduler_service"], "org": "org-1"}, ClaimNames(), ROLES
    )
    assert caller.kind == "service" and caller.organisation_id is None and caller.site_ids is None


# --- the verifier --------------------------------------------------------------------------------


class CountingKeys(InMemoryKeys):
    def __init__(self, issuer: TestIssuer, cooldown: float = 30.0) -> None:
        super().__init__(issuer.issuer, cooldown)
        self.lookups = 0

    def get_signing_key(self, kid: str) -> Any:
        self.lookups += 1
        return super().get_signing_key(kid)


def verifier(t: TestIssuer, keys: InMemoryKeys | None = None, **kwargs: Any) -> TokenVerifier:
    chosen = keys or InMemoryKeys(t.issuer, 30.0)
    return TokenVerifier(
        lambda: chosen,
        issuer=t.issuer.url,
        audience=t.issuer.audience,
        leeway_seconds=30,
        roles=ROLES,
        **kwargs,
    )


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_both_algorithms_are_accepted(algorithm: str) -> None:
    t = TestIssuer(algorithm)
    caller = verifier(t).caller(t.issuer.role_token("pharmacist", "org-1"))
    assert caller.subject == "dev-pharmacist" and caller.organisation_id == "org-1"


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
@pytest.mark.parametrize("case", [c for c in BAD_TOKENS if c != "no token"])
def test_bad_tokens_are_refused(case: str, algorithm: str) -> None:
    t = TestIssuer(algorithm)
    token = BAD_TOKENS[case](t)
    assert token is not None
    with pytest.raises(InvalidToken):
        verifier(t).caller(token)


def test_clock_skew_within_the_leeway_is_accepted() -> None:
    t = TestIssuer()
    v = verifier(t)
    just_expired = t.issuer.mint("u", roles=["nurse"], organisation="o", lifetime=-10)
    almost_valid = t.issuer.mint(
        "u", roles=["nurse"], organisation="o", not_before=time.time() + 10
    )
    assert v.caller(just_expired).subject == "u"
    assert v.caller(almost_valid).subject == "u"


def test_a_token_without_expiry_or_audience_is_refused() -> None:
    t = TestIssuer()
    key = t.issuer.signing_key
    for missing in ("exp", "aud"):
        body = {"iss": t.issuer.url, "aud": t.issuer.audience, "sub": "u", "exp": time.time() + 60}
        del body[missing]
        token = jwt.encode(body, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
        with pytest.raises(InvalidToken, match=missing):
            verifier(t).caller(token)


def test_a_token_whose_algorithm_is_not_its_keys_is_refused() -> None:
    t = TestIssuer("ES256")
    rsa = SigningKey.generate("RS256", kid=t.issuer.signing_key.kid)
    token = t.issuer.mint("u", roles=["nurse"], organisation="o", key=rsa)
    with pytest.raises(InvalidToken, match="ES256, not RS256"):
        verifier(t).caller(token)


def test_verified_tokens_are_cached_by_their_text_until_they_expire() -> None:
    t = TestIssuer()
    keys = CountingKeys(t)
    now = [time.time()]
    v = verifier(t, keys, now=lambda: now[0], cache_seconds=3600)
    token = t.issuer.mint("u", roles=["nurse"], organisation="o", lifetime=120)
    first = v.caller(token)
    assert v.caller(token) is first and keys.lookups == 1  # a hash, no signature check
    v.caller(t.issuer.mint("u", roles=["nurse"], organisation="o", lifetime=120))
    assert keys.lookups == 2  # another token, verified on its own
    now[0] += 121  # past its exp: verified again (PyJWT's leeway still accepts it here)
    v.caller(token)
    assert keys.lookups == 3


def test_the_cache_holds_a_verified_token_no_longer_than_cache_seconds() -> None:
    t = TestIssuer()
    keys = CountingKeys(t)
    now = [time.time()]
    v = verifier(t, keys, now=lambda: now[0], cache_seconds=60)
    token = t.issuer.role_token("nurse", "o")
    v.caller(token)
    now[0] += 61
    v.caller(token)
    assert keys.lookups == 2


def test_a_full_cache_is_purged_not_grown() -> None:
    t = TestIssuer()
    v = verifier(t, cache_size=3)
    for _ in range(10):
        v.caller(t.issuer.role_token("nurse", "o"))
    assert len(v._cache) <= 3


def test_issuer_keys_that_cannot_be_had_make_authentication_unavailable() -> None:
    t = TestIssuer()

    class Down(InMemoryKeys):
        def _download(self) -> Any:
            raise PyJWKClientConnectionError("connection refused")

    with pytest.raises(AuthUnavailable):
        verifier(t, Down(t.issuer, 30.0)).caller(t.issuer.role_token("nurse", "o"))


def test_an_unreachable_issuer_leaves_the_last_key_set_in_use() -> None:
    t = TestIssuer()
    down = threading.Event()

    class Flaky(InMemoryKeys):
        def _download(self) -> Any:
            if down.is_set():
                raise PyJWKClientConnectionError("connection refused")
            return super()._download()

    keys = Flaky(t.issuer, 0.0)
    first = keys.fetch_data()
    down.set()
    assert keys.fetch_data() == first and keys.fetches == 1


# --- the caller context --------------------------------------------------------------------------


def test_there_is_no_caller_outside_a_call_or_a_job() -> None:
    with pytest.raises(RuntimeError, match="no caller"):
        current_caller()


def test_acting_as_nests_and_restores() -> None:
    scheduler, inventory = service_caller("scheduler"), service_caller("inventory")
    with acting_as(scheduler):
        with acting_as(inventory):
            assert current_caller() is inventory
        assert current_caller() is scheduler
    with pytest.raises(RuntimeError):
        current_caller()


def test_work_run_as_a_service_sees_that_service_on_any_thread() -> None:
    seen: list[str] = []
    work = running_as(service_caller("inventory"), lambda: seen.append(current_caller().subject))
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == ["inventory"]


def test_a_service_caller_holds_its_service_roles_permissions() -> None:
    caller = service_caller("scheduler")
    assert caller.kind == "service" and caller.organisation_id is None
    assert caller.roles == {"scheduler_service"}
    assert caller.permissions == ROLES.grant(["scheduler_service"]).permissions
