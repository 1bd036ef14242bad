"""Tokens a caller should never get past the auth interceptor with, made with the test
issuer's own keys where that makes the forgery hardest to spot: every way a bearer token can
be wrong that the services must refuse (docs/security.md, "What is checked")."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

from services.issuer.issuer import SigningKey
from tests.issuer import TestIssuer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(t: TestIssuer) -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": t.issuer.url,
        "aud": t.issuer.audience,
        "sub": "mallory",
        "iat": now,
        "exp": now + 600,
        "roles": ["administrator", "pharmacist", "prescriber"],
        "org": "org-1",
    }


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def alg_none(t: TestIssuer) -> str:
    """No signature at all, the header says so."""
    return (
        _unsigned({"alg": "none", "typ": "JWT", "kid": t.issuer.signing_key.kid}, _claims(t)) + "."
    )


def hs256_with_public_key(t: TestIssuer) -> str:
    """HMAC keyed with the issuer's *public* key (anyone has it): the classic confusion."""
    key = t.issuer.signing_key
    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": key.kid}, _claims(t))
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def forged_same_kid(t: TestIssuer) -> str:
    """Signed by another key that claims the issuer's key id."""
    current = t.issuer.signing_key
    impostor = SigningKey.generate(current.algorithm, kid=current.kid)
    return t.issuer.mint("mallory", roles=["administrator"], organisation="org-1", key=impostor)


def unknown_kid(t: TestIssuer) -> str:
    impostor = SigningKey.generate(t.issuer.signing_key.algorithm)
    return t.issuer.mint("mallory", roles=["administrator"], organisation="org-1", key=impostor)


def expired(t: TestIssuer) -> str:
    """Expired two minutes ago: beyond the 30 s leeway."""
    return t.issuer.mint("late", roles=["administrator"], organisation="org-1", lifetime=-120)


def not_yet_valid(t: TestIssuer) -> str:
    return t.issuer.mint(
        "early", roles=["administrator"], organisation="org-1", not_before=time.time() + 600
    )


def wrong_issuer(t: TestIssuer) -> str:
    return t.issuer.mint(
        "elsewhere",
        roles=["administrator"],
        organisation="org-1",
        claims={"iss": "https://issuer.example"},
    )


def wrong_audience(t: TestIssuer) -> str:
    return t.issuer.mint(
        "other-api", roles=["administrator"], organisation="org-1", claims={"aud": "another-api"}
    )


def tampered(t: TestIssuer) -> str:
    """A valid token whose claims were edited after signing (a role added)."""
    header, _, signature = t.issuer.user_token(["nurse"], "org-1").split(".")
    return f"{header}.{_b64(json.dumps(_claims(t)).encode())}.{signature}"


# name -> a token, or None for no authorization header at all
BAD_TOKENS: dict[str, Callable[[TestIssuer], str | None]] = {
    "no token": lambda t: None,
    "not a JWT": lambda t: "not-a-jwt",
    "expired": expired,
    "not yet valid": not_yet_valid,
    "wrong issuer": wrong_issuer,
    "wrong audience": wrong_audience,
    "forged signature, same kid": forged_same_kid,
    "unknown kid": unknown_kid,
    "alg none": alg_none,
    "HS256 signed with the public key": hs256_with_public_key,
    "claims changed after signing": tampered,
}
