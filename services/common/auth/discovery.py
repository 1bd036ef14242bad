"""The issuer's OpenID Connect discovery document (``/.well-known/openid-configuration``):
where its keys (``jwks_uri``) and token endpoint are, so pointing the services at a provider
takes only AUTH_ISSUER. Fetched on first need, not at start: a service comes up (health,
migrations) while its identity provider is still starting."""

from __future__ import annotations

import threading
from typing import Any

import httpx


class DiscoveryError(RuntimeError):
    """The discovery document could not be fetched or lacks the endpoint asked for."""


class Discovery:
    def __init__(self, issuer: str, *, timeout: float = 5.0) -> None:
        self.issuer = issuer
        self._timeout = timeout
        self._document: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"

    def endpoint(self, name: str) -> str:
        """``jwks_uri`` or ``token_endpoint`` of the issuer."""
        with self._lock:
            if self._document is None:
                try:
                    response = httpx.get(self.url, timeout=self._timeout)
                    response.raise_for_status()
                    document = response.json()
                except (httpx.HTTPError, ValueError) as error:
                    raise DiscoveryError(f"cannot read {self.url}: {error}") from None
                if not isinstance(document, dict):
                    raise DiscoveryError(f"{self.url} is not a JSON object")
                self._document = document
            value = self._document.get(name)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise DiscoveryError(f"{self.url} names no {name}")
        return value
