"""The development issuer's authorization code flow with PKCE (RFC 6749 section 4.1, RFC 7636),
for the staff console's sign-in (docs/console.md): instead of a password, the sign-in page
offers one click per person role. A code is single use, lives 60 s, is bound to the client,
the redirect URI and the PKCE challenge (S256 only), and is answered at the token endpoint
with the role's access token and an OpenID Connect ID token.

Development only, like the rest of the issuer: any client id may ask (a public client, no
secret), and it may only be sent back to a loopback address (``localhost``, 127.0.0.0/8,
``[::1]``), where a browser on the same machine runs the console.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlparse

from services.issuer.issuer import DEV_ORGANISATION, USER_TOKEN_SECONDS, Issuer

CODE_SECONDS = 60.0


class AuthorizationError(ValueError):
    """An OAuth error: ``error`` is the RFC 6749 code, the message says why."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class AuthorizationRequest:
    """What /authorize was asked, checked (:meth:`parse`)."""

    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    nonce: str
    scope: str

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> AuthorizationRequest:
        """The request's parameters, or AuthorizationError (invalid_request and the like)."""
        redirect_uri = query.get("redirect_uri", "")
        if not loopback_uri(redirect_uri):
            raise AuthorizationError(
                "invalid_request", "redirect_uri must be an http(s) URL on a loopback address"
            )
        if query.get("response_type") != "code":
            raise AuthorizationError("unsupported_response_type", "response_type must be code")
        if not query.get("client_id"):
            raise AuthorizationError("invalid_request", "client_id is required")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            raise AuthorizationError(
                "invalid_request", "PKCE is required: code_challenge with method S256"
            )
        return cls(
            client_id=query["client_id"],
            redirect_uri=redirect_uri,
            state=query.get("state", ""),
            code_challenge=query["code_challenge"],
            nonce=query.get("nonce", ""),
            scope=query.get("scope", ""),
        )

    def fields(self) -> dict[str, str]:
        """The request as hidden form fields of the sign-in page (and back)."""
        return {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
            "nonce": self.nonce,
            "scope": self.scope,
        }


def loopback_uri(uri: str) -> bool:
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    if parsed.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parsed.hostname).is_loopback
    except ValueError:
        return False


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class _Grant:
    request: AuthorizationRequest
    role: str
    organisation: str
    expires: float


@dataclass
class Authorizations:
    """Codes handed out and not yet redeemed (in memory: a restart forgets them, and a
    sign-in in flight simply starts again)."""

    issuer: Issuer
    now: Callable[[], float] = time.time
    _codes: dict[str, _Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def person_roles(self) -> list[str]:
        """The roles the sign-in page offers: every role a person holds."""
        return self.issuer.roles.of_kind("user")

    def approve(
        self, request: AuthorizationRequest, role: str, organisation: str = DEV_ORGANISATION
    ) -> str:
        """The redirect (with a fresh code) after the user picked ``role``."""
        if role not in self.person_roles():
            raise AuthorizationError("invalid_request", f"unknown role {role!r}")
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._forget_expired()
            self._codes[code] = _Grant(
                request, role, organisation or DEV_ORGANISATION, self.now() + CODE_SECONDS
            )
        answer = {"code": code, **({"state": request.state} if request.state else {})}
        separator = "&" if urlparse(request.redirect_uri).query else "?"
        return f"{request.redirect_uri}{separator}{urlencode(answer)}"

    def redeem(self, form: Mapping[str, str]) -> dict[str, object]:
        """The token response for an authorization_code grant, or AuthorizationError
        (invalid_grant for a wrong, used, expired or mismatched code or verifier)."""
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # single use, whatever follows
        if grant is None or grant.expires < self.now():
            raise AuthorizationError("invalid_grant", "unknown, used or expired code")
        request = grant.request
        if form.get("client_id", request.client_id) != request.client_id:
            raise AuthorizationError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != request.redirect_uri:
            raise AuthorizationError("invalid_grant", "redirect_uri differs from the request's")
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not hmac.compare_digest(
            s256(verifier), request.code_challenge
        ):
            raise AuthorizationError("invalid_grant", "code_verifier does not match")
        access = self.issuer.role_token(grant.role, grant.organisation)
        now = int(self.now())
        subject = f"dev-{grant.role}"
        claims: dict[str, object] = {
            "aud": request.client_id,
            "name": grant.role.replace("_", " ").capitalize() + " (development)",
            "roles": [grant.role],
            "org": grant.organisation,
            "sites": "*",
        }
        if request.nonce:
            claims["nonce"] = request.nonce
        id_token = self.issuer.mint(
            subject, lifetime=USER_TOKEN_SECONDS, client_id=request.client_id, claims=claims
        )
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": USER_TOKEN_SECONDS,
            "id_token": id_token,
            "scope": request.scope,
            "issued_at": now,
        }

    def _forget_expired(self) -> None:
        now = self.now()
        for code in [c for c, g in self._codes.items() if g.expires < now]:
            del self._codes[code]
