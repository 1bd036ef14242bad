"""The issuer's key set read in-process instead of over HTTP (the in-process tests, the
benchmarks' per-call measurements): PyJWKClient's caching, refetch and cooldown as the services
use them, fed from an :class:`Issuer` object."""

from __future__ import annotations

import time
from typing import Any

from services.common.auth.jwks import JwksKeys
from services.issuer.issuer import Issuer


class InMemoryKeys(JwksKeys):
    def __init__(self, issuer: Issuer, cooldown: float) -> None:
        super().__init__(f"{issuer.url}/jwks.json", cooldown=cooldown)
        self.issuer = issuer

    def _download(self) -> Any:
        data = self.issuer.jwks()
        # what PyJWKClient.fetch_data records after its HTTP fetch (the refetch cooldown)
        self._last_successful_fetch = time.monotonic()
        return data
