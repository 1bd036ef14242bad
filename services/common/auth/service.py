"""What one service is built with to authenticate: the verifier of its callers' tokens and
the source of its own token. :meth:`ServiceAuth.from_settings` makes it for deployments; the
tests' in-memory issuer makes one without HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from services.common.auth.claims import ClaimNames
from services.common.auth.discovery import Discovery
from services.common.auth.interceptor import AuthInterceptor, Denied
from services.common.auth.jwks import JwksKeys
from services.common.auth.policy import MethodPolicy, policy_of
from services.common.auth.roles import Roles, RolesError
from services.common.auth.tokens import ClientCredentials, TokenSource, TokenUnavailable
from services.common.auth.verifier import TokenVerifier, Verifier
from services.common.settings import ServiceSettings, SettingsError


class _NoOutgoingCalls:
    """The token source of a service that calls no peer (notify)."""

    def __init__(self, service: str) -> None:
        self._service = service

    def token(self) -> str:
        raise TokenUnavailable(f"{self._service} has no client credentials for outgoing calls")


@dataclass(frozen=True)
class ServiceAuth:
    service: str
    verifier: Verifier  # bearer token -> Caller, for incoming calls
    tokens: TokenSource  # this service's own token, for its calls to peers
    # what each method requires: the protos' declarations
    policies: Callable[[str], MethodPolicy | None] = policy_of

    def interceptor(self, on_denied: Denied | None = None) -> grpc.ServerInterceptor:  # type: ignore[type-arg]
        """``on_denied``: told of each refused authenticated call (the audit trail's)."""
        return AuthInterceptor(self.verifier, self.policies, on_denied)

    @classmethod
    def from_settings(cls, settings: ServiceSettings, *, calls_peers: bool) -> ServiceAuth:
        """From the AUTH_* and <SERVICE>_CLIENT_* settings; SettingsError names what is
        missing (a service does not serve without an issuer to trust: there is no
        unauthenticated mode)."""
        problems = []
        if not settings.auth_issuer:
            problems.append("AUTH_ISSUER: required (the token issuer's URL; docs/security.md)")
        secret = settings.client_secret
        if calls_peers and not secret.get_secret_value():
            problems.append(
                f"{settings.variable('client_secret')}: required (this service's client "
                "credentials for its calls to peers; docs/security.md)"
            )
        try:
            roles = Roles.load(settings.auth_roles_file)
        except RolesError as error:
            problems.append(f"AUTH_ROLES_FILE: {error}")
        if problems:
            raise SettingsError(f"{settings.service} cannot start: " + "; ".join(problems))
        discovery = Discovery(settings.auth_issuer)
        jwks_url = settings.auth_jwks_url
        verifier = TokenVerifier(
            lambda: JwksKeys(jwks_url or discovery.endpoint("jwks_uri")),
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            leeway_seconds=settings.auth_leeway_seconds,
            roles=roles,
            claims=ClaimNames(
                organisation=settings.auth_claim_organisation,
                sites=settings.auth_claim_sites,
                roles=settings.auth_claim_roles,
                scope=settings.auth_claim_scope,
                client_id=settings.auth_claim_client_id,
            ),
        )
        tokens: TokenSource = (
            ClientCredentials(
                settings.auth_token_url or discovery,
                settings.client_id or settings.service,
                secret,
            )
            if calls_peers
            else _NoOutgoingCalls(settings.service)
        )
        return cls(settings.service, verifier, tokens)
