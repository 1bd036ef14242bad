"""Bearer token -> :class:`Caller`: the signature against the issuer's published keys, then
``iss``, ``aud``, ``exp`` and ``nbf`` (with a small leeway for clock skew), then the claims.

PyJWT does the cryptography and the claim checks; what is decided here:

- algorithms are exactly RS256 and ES256, and the token's ``alg`` must be its key's own
  algorithm: ``alg: none`` and HMAC with a public key as the secret are refused before any
  key is touched;
- a verified token is cached by the SHA-256 of its text until it expires (at most
  ``cache_seconds``, so a key the issuer withdraws stops working within that time):
  verification costs a signature check, a cache hit a hash.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

import jwt
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError

from services.common.auth.claims import ClaimNames, InvalidClaims, caller_from_claims
from services.common.auth.discovery import DiscoveryError
from services.common.auth.roles import Roles
from services.common.identity import Caller

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
REQUIRED_CLAIMS = ("exp", "iss", "aud", "sub")


class InvalidToken(Exception):
    """The token proves nothing (the message says why: logged, never sent to the caller)."""


class AuthUnavailable(Exception):
    """The issuer's keys cannot be had: nothing can be verified until it is back."""


class Verifier(Protocol):
    def caller(self, token: str) -> Caller: ...


class TokenVerifier:
    def __init__(
        self,
        keys: Callable[[], jwt.PyJWKClient],
        *,
        issuer: str,
        audience: str,
        leeway_seconds: float,
        roles: Roles,
        claims: ClaimNames | None = None,
        algorithms: Collection[str] = ALGORITHMS,
        cache_seconds: float = 300.0,
        cache_size: int = 10_000,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``keys`` makes the JWKS client on first use (its URL may come from discovery)."""
        self._make_keys = keys
        self._keys: jwt.PyJWKClient | None = None
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        self.roles = roles
        self.claims = claims or ClaimNames()
        self.algorithms = frozenset(algorithms)
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._now = now
        self._cache: dict[bytes, tuple[float, Caller]] = {}
        self._lock = threading.Lock()

    def caller(self, token: str) -> Caller:
        """Who ``token`` proves the caller is; InvalidToken or AuthUnavailable otherwise."""
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > self._now():
            return hit[1]
        claims = self._verify(token)
        try:
            caller = caller_from_claims(claims, self.claims, self.roles)
        except InvalidClaims as error:
            raise InvalidToken(str(error)) from None
        self._remember(digest, float(claims["exp"]), caller)
        return caller

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise InvalidToken(f"malformed: {error}") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in self.algorithms:
            raise InvalidToken(f"algorithm {algorithm!r} is not accepted")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no key id (kid)")
        try:
            key = self.keys().get_signing_key(kid)
        except (PyJWKClientConnectionError, DiscoveryError) as error:
            raise AuthUnavailable(str(error)) from None
        except PyJWKClientError as error:
            raise InvalidToken(str(error)) from None
        if key.algorithm_name != algorithm:
            raise InvalidToken(f"key {kid!r} is for {key.algorithm_name}, not {algorithm}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidTokenError as error:
            raise InvalidToken(f"{type(error).__name__}: {error}") from None
        return claims

    def keys(self) -> jwt.PyJWKClient:
        if self._keys is None:
            with self._lock:
                if self._keys is None:
                    self._keys = self._make_keys()
        return self._keys

    def _remember(self, digest: bytes, expires: float, caller: Caller) -> None:
        now = self._now()
        with self._lock:
            if len(self._cache) >= self._cache_size:
                for key in [k for k, (until, _) in self._cache.items() if until <= now]:
                    del self._cache[key]
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
            self._cache[digest] = (min(expires, now + self._cache_seconds), caller)
