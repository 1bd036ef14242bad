"""Sign-in: OpenID Connect authorization code with PKCE (S256) against the platform's issuer,
done by Authlib's Starlette client (state, nonce, code verifier, the ID token's signature and
claims). What the console keeps of a signed-in user lives in the signed session cookie
(Starlette's SessionMiddleware): who they are (the ID token's claims) and the access token
its calls to the services carry. No database.

What a user may open follows from their roles through the platform's roles file
(services/common/auth/roles.yaml), the same grant the services compute from the token: a page
is shown (and in the navigation) only to a user holding every permission its calls need."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from authlib.integrations.starlette_client import OAuth
from starlette.requests import Request

from services.common.auth.claims import ClaimNames, claim
from services.common.auth.roles import Roles

SESSION_USER = "user"
SESSION_TOKEN = "access_token"


@dataclass(frozen=True)
class Page:
    name: str
    title: str
    path: str
    permissions: frozenset[str]


PAGES = (
    Page(
        "board",
        "Chair board",
        "/board",
        frozenset({"scheduler.sites.read", "scheduler.board.read", "scheduler.patients.read"}),
    ),
    Page(
        "due",
        "Due list",
        "/due",
        frozenset(
            {
                "scheduler.sites.read",
                "scheduler.due_infusions.read",
                "scheduler.slots.read",
                "scheduler.appointments.book",
                "scheduler.appointments.read",
                "scheduler.patients.read",
                "scheduler.therapy_plans.read",
                "scheduler.chairs.read",
            }
        ),
    ),
    Page(
        "plan",
        "Plan schedule",
        "/plan",
        frozenset(
            {
                "scheduler.sites.read",
                "scheduler.schedule.plan",
                "scheduler.board.read",
                "scheduler.patients.read",
                "scheduler.chairs.read",
            }
        ),
    ),
    Page(
        "pharmacy",
        "Pharmacy",
        "/pharmacy",
        frozenset({"inventory.sites.read", "inventory.lots.read", "inventory.reservations.read"}),
    ),
    Page(
        "patients",
        "Patients",
        "/patients",
        frozenset({"scheduler.patients.read", "scheduler.therapy_plans.read"}),
    ),
    Page("stock", "Stock", "/stock", frozenset({"inventory.sites.read", "inventory.stock.read"})),
    Page(
        "receive",
        "Receive",
        "/receive",
        frozenset({"inventory.sites.read", "inventory.stock.receive"}),
    ),
    Page(
        "forecast",
        "Forecast",
        "/forecast",
        frozenset({"inventory.sites.read", "inventory.stock.read", "inventory.forecast.read"}),
    ),
    Page(
        "reorder",
        "Reorder",
        "/reorder",
        frozenset(
            {
                "inventory.sites.read",
                "inventory.reorder_policies.read",
                "inventory.purchase_orders.read",
            }
        ),
    ),
    Page(
        "recall",
        "Recall",
        "/recall",
        frozenset({"inventory.lots.read", "inventory.lots.trace"}),
    ),
)
MY_NOTIFICATIONS = Page(
    "me", "My notifications", "/me/notifications", frozenset({"notify.self.manage"})
)
"""The user's own notifications page (me.py), linked at the end of the navigation rather than
among PAGES: the permission is its three calls' (notify's self-service), which every staff
role but the auditor's holds, as shipped."""
PAGE = {p.name: p for p in (*PAGES, MY_NOTIFICATIONS)}


@dataclass(frozen=True)
class User:
    subject: str
    name: str
    organisation: str
    roles: tuple[str, ...]
    sites: tuple[str, ...] | None  # None: every site of the organisation
    expires: float
    token: str

    @classmethod
    def from_session(cls, session: dict[str, Any]) -> User | None:
        data = session.get(SESSION_USER)
        token = session.get(SESSION_TOKEN)
        if not isinstance(data, dict) or not isinstance(token, str):
            return None
        sites = data.get("sites")
        return cls(
            subject=str(data.get("sub", "")),
            name=str(data.get("name") or data.get("sub", "")),
            organisation=str(data.get("org", "")),
            roles=tuple(str(r) for r in data.get("roles") or ()),
            sites=None if sites in (None, "*") else tuple(str(s) for s in sites),
            expires=float(data.get("exp", 0)),
            token=token,
        )

    def expired(self, now: float) -> bool:
        return self.expires <= now

    def permissions(self, roles: Roles) -> frozenset[str]:
        return roles.grant(self.roles).permissions

    def may_open(self, page: Page, roles: Roles) -> bool:
        return page.permissions <= self.permissions(roles)

    def pages(self, roles: Roles) -> list[Page]:
        return [p for p in PAGES if self.may_open(p, roles)]

    def sees_site(self, site_id: str) -> bool:
        return self.sites is None or site_id in self.sites


def remember(
    session: dict[str, Any],
    claims: dict[str, Any],
    access_token: str,
    names: ClaimNames | None = None,
) -> None:
    """Keep what the console needs of a fresh sign-in (not the ID token itself), the
    organisation, sites and roles read where ``names`` say (AUTH_CLAIM_*)."""
    names = names or ClaimNames()
    sites = claim(claims, names.sites)
    session.clear()
    session[SESSION_USER] = {
        "sub": claims.get("sub", ""),
        "name": claims.get("name") or claims.get("preferred_username") or "",
        "org": claim(claims, names.organisation) or "",
        "roles": list(_strings(claim(claims, names.roles))),
        "sites": "*" if sites in (None, "*") else list(_strings(sites)),
        "exp": min(float(claims.get("exp", 0)), time.time() + 24 * 3600),
    }
    session[SESSION_TOKEN] = access_token


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def oauth_client(issuer: str, client_id: str, client_secret: str) -> Any:
    """Authlib's client for the issuer: PKCE S256, the ID token checked against its keys."""
    oauth = OAuth()
    kwargs: dict[str, Any] = {"scope": "openid profile", "code_challenge_method": "S256"}
    if not client_secret:
        kwargs["token_endpoint_auth_method"] = "none"
    oauth.register(
        "platform",
        client_id=client_id,
        client_secret=client_secret or None,
        server_metadata_url=f"{issuer.rstrip('/')}/.well-known/openid-configuration",
        client_kwargs=kwargs,
    )
    return oauth.platform


def current_user(request: Request) -> User | None:
    return User.from_session(request.session)
