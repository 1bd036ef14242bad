"""The in-memory test issuer: the development issuer's code (services/issuer) without HTTP.

In-process servers get a :class:`ServiceAuth` whose verifier reads this issuer's key set
directly (counting the fetches, which the key rotation test checks) and whose outgoing token
is a service token of this issuer; test clients get channels whose calls carry a token of the
role they ask for (services.common.channels.open_channel).
"""

from __future__ import annotations

import grpc

from services.common.auth.roles import Roles
from services.common.auth.service import ServiceAuth
from services.common.auth.tokens import StaticToken
from services.common.auth.verifier import TokenVerifier
from services.common.channels import open_channel
from services.common.identity import Caller
from services.issuer.issuer import OPERATOR_ROLES, Issuer
from services.issuer.memory import InMemoryKeys

URL = "https://issuer.test"
TEST_ORGANISATION = "org-1"


class Recorded:
    """A service's verifier that notes whom each call it let in came from."""

    def __init__(self, service: str, inner: TokenVerifier, log: list[tuple[str, Caller]]) -> None:
        self.service = service
        self.inner = inner
        self._log = log

    def caller(self, token: str) -> Caller:
        caller = self.inner.caller(token)
        self._log.append((self.service, caller))
        return caller


class TestIssuer:
    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, algorithm: str = "ES256") -> None:
        self.issuer = Issuer.fresh(URL, "RS256" if algorithm == "RS256" else "ES256")
        self.keys: list[InMemoryKeys] = []
        # (service, caller) of every call a service built with service_auth let in
        self.verified: list[tuple[str, Caller]] = []

    def verifier(self, cooldown: float = 30.0, roles: Roles | None = None) -> TokenVerifier:
        keys = InMemoryKeys(self.issuer, cooldown)
        self.keys.append(keys)
        return TokenVerifier(
            lambda: keys,
            issuer=self.issuer.url,
            audience=self.issuer.audience,
            leeway_seconds=30,
            roles=roles or Roles.default(),
        )

    def service_auth(self, service: str, cooldown: float = 30.0) -> ServiceAuth:
        """What ``service`` is built with: trust in this issuer and its own service token."""
        token = self.issuer.role_token(f"{service}_service")
        verifier = Recorded(service, self.verifier(cooldown), self.verified)
        return ServiceAuth(service, verifier, StaticToken(token))

    def operator_token(self, organisation: str = TEST_ORGANISATION) -> str:
        """What the integration tests act as: every role a person may hold, in org-1."""
        return self.issuer.user_token(OPERATOR_ROLES, organisation, subject="test-operator")

    def integration_token(self, organisation: str = TEST_ORGANISATION) -> str:
        """A hospital system granted every permission its role allows (the notify tests act
        as one: it publishes, reads and streams notifications)."""
        return self.issuer.role_token("integration", organisation)

    def channel(self, address: str, token: str | None = None) -> grpc.Channel:
        """A channel whose calls carry ``token`` (the operator's by default)."""
        return open_channel(address, None, StaticToken(token or self.operator_token()))

    def service_channel(self, service: str, address: str) -> grpc.Channel:
        """A channel whose calls carry ``service``'s own token (its relays, lookups)."""
        return self.channel(address, self.issuer.role_token(f"{service}_service"))
