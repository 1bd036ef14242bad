"""The issuer's public keys (JWKS), through PyJWT's ``PyJWKClient``: the key set is fetched
once and cached (``lifespan``), and a token signed with a key id the cache does not hold
triggers one refetch, at most once per ``cooldown`` seconds (key rotation without letting
made-up key ids hammer the issuer).

Two additions: fetches are counted and logged (operators see rotations; tests count them),
and when the issuer cannot be reached the last key set that could be is kept, so an identity
provider's outage does not turn into every call failing once the cache ages out.
"""

from __future__ import annotations

import logging
from typing import Any

from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError

log = logging.getLogger(__name__)

LIFESPAN_SECONDS = 300.0
COOLDOWN_SECONDS = 30.0


class JwksKeys(PyJWKClient):
    def __init__(
        self,
        uri: str,
        *,
        lifespan: float = LIFESPAN_SECONDS,
        cooldown: float = COOLDOWN_SECONDS,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(uri, lifespan=lifespan, cooldown_duration=cooldown, timeout=timeout)
        self.fetches = 0
        self._last_good: Any = None

    def fetch_data(self) -> Any:
        try:
            data = self._download()
        except PyJWKClientConnectionError as error:
            if self._last_good is None:
                raise
            log.warning(
                "cannot refresh the keys from %s (%s): keeping the last set", self.uri, error
            )
            return self._last_good
        self.fetches += 1
        self._last_good = data
        kids = [k.get("kid") for k in data.get("keys", []) if isinstance(k, dict)]
        log.info("fetched the token signing keys from %s: %s", self.uri, kids)
        return data

    def _download(self) -> Any:
        """The key set as the issuer publishes it (PyJWKClient's HTTP fetch)."""
        return super().fetch_data()
