"""The issuer itself: signing keys, minting tokens, the published key set (JWKS) and the
services' client credentials. The HTTP front (endpoints.py) serves it for ``make run`` and the
process tests; the in-process tests use it directly (tests/issuer.py), without HTTP.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services.common.auth.roles import Roles

Algorithm = Literal["ES256", "RS256"]
AUDIENCE = "infusion-platform"
DEV_ORGANISATION = "demo-org"  # the organisation of `make run`'s demo centre
USER_TOKEN_SECONDS = 8 * 3600  # a working day of `make token`
SERVICE_TOKEN_SECONDS = 3600
SERVICES = ("scheduler", "inventory", "notify")
# What the demo loaders (`make run`, `make demo`) and the integration tests act as: a person
# holding every role their steps need (sites, patients, bookings, stock).
OPERATOR_ROLES = (
    "administrator",
    "prescriber",
    "scheduling_coordinator",
    "nurse",
    "pharmacist",
    "pharmacy_manager",
)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: Algorithm
    private_key: PrivateKey

    @classmethod
    def generate(cls, algorithm: Algorithm = "ES256", kid: str | None = None) -> SigningKey:
        private: PrivateKey = (
            ec.generate_private_key(ec.SECP256R1())
            if algorithm == "ES256"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        return cls(kid or secrets.token_hex(8), algorithm, private)

    def public_jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        jwk: dict[str, Any] = (
            ECAlgorithm.to_jwk(public, as_dict=True)
            if isinstance(public, ec.EllipticCurvePublicKey)
            else RSAAlgorithm.to_jwk(public, as_dict=True)
        )
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def to_dict(self) -> dict[str, str]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {"kid": self.kid, "alg": self.algorithm, "private_key": pem.decode()}

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> SigningKey:
        private = serialization.load_pem_private_key(data["private_key"].encode(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        algorithm: Algorithm = "RS256" if data["alg"] == "RS256" else "ES256"
        return cls(data["kid"], algorithm, private)


@dataclass
class Issuer:
    """``keys[-1]`` signs; every key in ``keys`` is published, so tokens signed before a
    rotation stay valid until they expire."""

    url: str
    audience: str = AUDIENCE
    keys: list[SigningKey] = field(default_factory=list)
    # client id -> secret, for the client credentials grant (the three services)
    clients: dict[str, str] = field(default_factory=dict)
    roles: Roles = field(default_factory=Roles.default)
    now: Callable[[], float] = time.time

    @classmethod
    def fresh(cls, url: str, algorithm: Algorithm = "ES256", **kwargs: Any) -> Issuer:
        issuer = cls(url, keys=[SigningKey.generate(algorithm)], **kwargs)
        issuer.clients = {name: secrets.token_urlsafe(24) for name in SERVICES}
        return issuer

    # -- keys ---------------------------------------------------------------------------------

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self, algorithm: Algorithm | None = None) -> SigningKey:
        """A new key signs from now on; the old ones stay published."""
        key = SigningKey.generate(algorithm or self.signing_key.algorithm)
        self.keys.append(key)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks.json",
            "token_endpoint": f"{self.url}/token",
            # the staff console's sign-in (services/issuer/authorization.py)
            "authorization_endpoint": f"{self.url}/authorize",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile"],
            "subject_types_supported": ["public"],
            "grant_types_supported": ["client_credentials", "authorization_code"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "id_token_signing_alg_values_supported": sorted({k.algorithm for k in self.keys}),
        }

    # -- tokens -------------------------------------------------------------------------------

    def mint(
        self,
        subject: str,
        *,
        roles: Iterable[str] = (),
        organisation: str | None = None,
        sites: list[str] | str | None = None,
        scope: str = "",
        client_id: str = "dev-cli",
        lifetime: float = USER_TOKEN_SECONDS,
        not_before: float | None = None,
        claims: Mapping[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """A signed token; ``claims`` override or add any claim (tests make bad tokens so)."""
        now = self.now()
        body: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            "sub": subject,
            "iat": int(now),
            "exp": int(now + lifetime),
            "jti": str(uuid.uuid4()),
            "azp": client_id,
            "roles": list(roles),
        }
        if not_before is not None:
            body["nbf"] = int(not_before)
        if organisation is not None:
            body["org"] = organisation
        if sites is not None:
            body["sites"] = sites
        if scope:
            body["scope"] = scope
        body.update(claims or {})
        signer = key or self.signing_key
        return jwt.encode(
            body, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid}
        )

    def user_token(
        self,
        roles: Iterable[str],
        organisation: str = DEV_ORGANISATION,
        sites: list[str] | str = "*",
        subject: str = "dev-operator",
    ) -> str:
        """A person's token: ``roles`` in ``organisation`` at ``sites`` ("*": all)."""
        return self.mint(subject, roles=roles, organisation=organisation, sites=sites)

    def role_token(
        self,
        role: str,
        organisation: str = DEV_ORGANISATION,
        sites: list[str] | str = "*",
        lifetime: float = USER_TOKEN_SECONDS,
    ) -> str:
        """A token for a person (or, for a client role, a hospital system granted every
        permission of its role; for a service role, that service) holding ``role``."""
        spec = self.roles.specs.get(role)
        if spec is None:
            raise KeyError(f"unknown role {role!r}; roles: {', '.join(self.roles.specs)}")
        if spec.kind == "service":
            service = role.removesuffix("_service")
            return self.mint(service, roles=[role], client_id=service, lifetime=lifetime)
        return self.mint(
            f"dev-{role}",
            roles=[role],
            organisation=organisation,
            sites=sites,
            scope=" ".join(spec.permissions) if spec.kind == "client" else "",
            client_id=f"dev-{role}" if spec.kind == "client" else "dev-cli",
            lifetime=lifetime,
        )

    def client_credentials(self, client_id: str, secret: str) -> str | None:
        """A service token for a client whose secret matches, else None."""
        expected = self.clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            return None
        return self.role_token(f"{client_id}_service", lifetime=SERVICE_TOKEN_SECONDS)

    # -- a directory of its own (var/issuer) -------------------------------------------------

    @classmethod
    def load_or_create(cls, directory: Path, url: str) -> Issuer:
        """The issuer kept in ``directory`` (created with a fresh key and client secrets the
        first time; readable by the owner only)."""
        state = directory / "issuer.json"
        if state.exists():
            data = json.loads(state.read_text())
            return cls(
                data["url"],
                data.get("audience", AUDIENCE),
                [SigningKey.from_dict(k) for k in data["keys"]],
                dict(data["clients"]),
            )
        issuer = cls.fresh(url)
        issuer.save(directory)
        return issuer

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = {
            "url": self.url,
            "audience": self.audience,
            "keys": [k.to_dict() for k in self.keys],
            "clients": self.clients,
        }
        partial = directory / f".issuer.json.{os.getpid()}"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(data, out, indent=2)
        partial.replace(directory / "issuer.json")

    def service_environment(self) -> dict[str, str]:
        """What the services need to trust this issuer and get their own tokens from it."""
        env = {"AUTH_ISSUER": self.url, "AUTH_AUDIENCE": self.audience}
        for name, secret in self.clients.items():
            env[f"{name.upper()}_CLIENT_ID"] = name
            env[f"{name.upper()}_CLIENT_SECRET"] = secret
        return env
