"""From a verified token's claims to a :class:`Caller`.

Claim names differ between identity providers (Keycloak puts realm roles at
``realm_access.roles``), so each is a setting (``AUTH_CLAIM_*``) and may be a dotted path into
nested claims. The rules that make a token unusable even with a good signature live here too:
no subject, or a person or hospital system without an organisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.common.auth.roles import Roles
from services.common.identity import Caller

ALL_SITES = "*"


class InvalidClaims(ValueError):
    """The token verified but cannot be turned into a caller (the message says why; it is
    logged, never returned to the caller)."""


@dataclass(frozen=True)
class ClaimNames:
    organisation: str = "org"
    sites: str = "sites"
    roles: str = "roles"
    scope: str = "scope"
    client_id: str = "azp"


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``realm_access.roles``), or None."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidClaims(f"claim {name!r} is neither a string nor a list of strings")


def caller_from_claims(claims: Mapping[str, Any], names: ClaimNames, roles: Roles) -> Caller:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidClaims("no subject (sub)")
    token_roles = frozenset(_strings(claim(claims, names.roles), names.roles))
    scopes = _strings(claim(claims, names.scope), names.scope)
    grant = roles.grant(token_roles, scopes)
    client_id = claim(claims, names.client_id) or claims.get("client_id") or ""
    if grant.kind == "service":
        organisation, sites = None, None
    else:
        organisation = claim(claims, names.organisation)
        if not isinstance(organisation, str) or not organisation:
            raise InvalidClaims(f"no organisation ({names.organisation})")
        sites = _sites(claim(claims, names.sites), names.sites)
    return Caller(
        subject=subject,
        kind=grant.kind,
        organisation_id=organisation,
        site_ids=sites,
        roles=token_roles,
        permissions=grant.permissions,
        client_id=str(client_id),
        token_id=str(claims.get("jti") or ""),
    )


def _sites(value: Any, name: str) -> frozenset[str] | None:
    """A list of site ids; "*" or no claim at all = every site of the organisation."""
    if value is None or value == ALL_SITES:
        return None
    if isinstance(value, str):
        raise InvalidClaims(f"claim {name!r} must be a list of site ids or {ALL_SITES!r}")
    return frozenset(_strings(value, name))
