"""Where a service's (or a tool's) own bearer token comes from, for its outgoing calls.

A service calls its peers as itself, never with the token of the user whose request led to
the call: in deployments its token comes from the identity provider by the OAuth 2.0 client
credentials grant (RFC 6749 section 4.4), cached until shortly before it expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import httpx
import jwt
from pydantic import SecretStr

from services.common.auth.discovery import Discovery, DiscoveryError

# a token is renewed this long before it expires, so none expires on its way to a peer
RENEW_BEFORE_SECONDS = 60.0


class TokenSource(Protocol):
    def token(self) -> str: ...


class TokenUnavailable(RuntimeError):
    """No token could be obtained (the identity provider is unreachable or refused)."""


class StaticToken:
    """One token, as given (tools and tests that already hold one)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token


class ClientCredentials:
    def __init__(
        self,
        token_url: str | Discovery,
        client_id: str,
        client_secret: SecretStr,
        *,
        timeout: float = 5.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        """``token_url`` or the issuer's discovery document that names it."""
        self._token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self._timeout = timeout
        self._now = now
        self._token = ""
        self._renew_at = 0.0
        self._lock = threading.Lock()
        self.requests = 0

    def token(self) -> str:
        with self._lock:
            if not self._token or self._now() >= self._renew_at:
                self._token, lifetime = self._request()
                self._renew_at = self._now() + max(lifetime - RENEW_BEFORE_SECONDS, lifetime / 2)
            return self._token

    def _url(self) -> str:
        if isinstance(self._token_url, Discovery):
            try:
                return self._token_url.endpoint("token_endpoint")
            except DiscoveryError as error:
                raise TokenUnavailable(str(error)) from None
        return self._token_url

    def _request(self) -> tuple[str, float]:
        url = self._url()
        self.requests += 1
        try:
            response = httpx.post(
                url,
                data={"grant_type": "client_credentials"},
                auth=(self.client_id, self._secret.get_secret_value()),
                timeout=self._timeout,
            )
            response.raise_for_status()
            body = response.json()
            token = body["access_token"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            raise TokenUnavailable(
                f"no token for client {self.client_id!r} from {url}: {error}"
            ) from None
        return str(token), self._lifetime(body, str(token))

    def _lifetime(self, body: dict[str, object], token: str) -> float:
        """``expires_in`` of the answer, else the token's own ``exp`` (read, not verified:
        only the services it is sent to need to trust it)."""
        expires_in = body.get("expires_in")
        if isinstance(expires_in, int | float) and expires_in > 0:
            return float(expires_in)
        try:
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        except jwt.InvalidTokenError:
            exp = None
        return float(exp) - self._now() if isinstance(exp, int | float) else 300.0
