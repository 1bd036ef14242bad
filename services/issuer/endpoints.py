"""The issuer over HTTP, as an OpenID Connect provider's front: the discovery document, the
key set and the token endpoint (client credentials only: people get their development tokens
from ``make token``). The standard library's threading HTTP server is enough for a
development tool that answers a few requests a minute."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from services.issuer.issuer import SERVICE_TOKEN_SECONDS, Issuer

log = logging.getLogger(__name__)


def make_server(issuer: Issuer, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlparse(self.path).path
            if path == "/.well-known/openid-configuration":
                self._json(HTTPStatus.OK, issuer.discovery())
            elif path == "/jwks.json":
                self._json(HTTPStatus.OK, issuer.jwks())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not_found"})

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/token":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if form.get("grant_type") != "client_credentials":
                self._json(HTTPStatus.BAD_REQUEST, {"error": "unsupported_grant_type"})
                return
            client_id, secret = _client(self.headers.get("Authorization", ""), form)
            token = issuer.client_credentials(client_id, secret)
            if token is None:
                log.info("token refused for client %r", client_id)
                self._json(HTTPStatus.UNAUTHORIZED, {"error": "invalid_client"})
                return
            self._json(
                HTTPStatus.OK,
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": SERVICE_TOKEN_SECONDS,
                },
            )

        def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return ThreadingHTTPServer((host, port), Handler)


def _client(authorization: str, form: dict[str, str]) -> tuple[str, str]:
    """client_secret_basic (RFC 6749 section 2.3.1), else client_secret_post."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return unquote(user), unquote(password)
    return form.get("client_id", ""), form.get("client_secret", "")
