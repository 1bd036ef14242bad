"""The issuer over HTTP, as an OpenID Connect provider's front: the discovery document, the
key set, the token endpoint (client credentials for the services, authorization codes for the
staff console) and the authorization endpoint, a sign-in page offering one click per person
role (authorization.py; people's command-line tokens come from ``make token``). The standard
library's threading HTTP server is enough for a development tool that answers a few requests
a minute."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from jinja2 import Environment

from services.issuer.authorization import AuthorizationError, AuthorizationRequest, Authorizations
from services.issuer.issuer import DEV_ORGANISATION, SERVICE_TOKEN_SECONDS, Issuer

log = logging.getLogger(__name__)


def make_server(issuer: Issuer, host: str, port: int) -> ThreadingHTTPServer:
    authorizations = Authorizations(issuer)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/.well-known/openid-configuration":
                self._json(HTTPStatus.OK, issuer.discovery())
            elif url.path == "/jwks.json":
                self._json(HTTPStatus.OK, issuer.jwks())
            elif url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                try:
                    request = AuthorizationRequest.parse(query)
                except AuthorizationError as error:
                    self._page(HTTPStatus.BAD_REQUEST, error=error.description)
                    return
                self._page(HTTPStatus.OK, request=request, roles=authorizations.person_roles())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not_found"})

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            if path not in ("/token", "/authorize"):
                self._json(HTTPStatus.NOT_FOUND, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if path == "/authorize":
                self._approve(form)
                return
            if form.get("grant_type") == "authorization_code":
                try:
                    self._json(HTTPStatus.OK, authorizations.redeem(form))
                except AuthorizationError as error:
                    log.info("authorization code refused: %s", error.description)
                    self._json(
                        HTTPStatus.BAD_REQUEST,
                        {"error": error.error, "error_description": error.description},
                    )
                return
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

        def _approve(self, form: dict[str, str]) -> None:
            try:
                request = AuthorizationRequest.parse(form)
                location = authorizations.approve(
                    request, form.get("role", ""), form.get("organisation", "")
                )
            except AuthorizationError as error:
                self._page(HTTPStatus.BAD_REQUEST, error=error.description)
                return
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", location)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _page(self, status: HTTPStatus, **values: Any) -> None:
            data = SIGN_IN.render(organisation=DEV_ORGANISATION, **values).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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


SIGN_IN = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in (development issuer)</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1a1a1a; background: #fff; }
button { font-size: 1rem; padding: .5rem 1rem; margin: .25rem 0; min-width: 16rem;
  background: #0b4f8a; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }
button:focus-visible, input:focus-visible { outline: 3px solid #f5a300; outline-offset: 2px; }
</style>
</head>
<body>
<main>
<h1>Sign in to the infusion platform</h1>
<p>Development issuer: no passwords. Choose who you are; the token is of your organisation
and every site.</p>
{% if error %}<p role="alert"><strong>Cannot sign in:</strong> {{ error }}</p>{% else %}
<form method="post" action="/authorize">
{% for name, value in request.fields().items() %}
<input type="hidden" name="{{ name }}" value="{{ value }}">
{% endfor %}
<p><label for="organisation">Organisation</label>
<input id="organisation" name="organisation" value="{{ organisation }}"></p>
<ul style="list-style: none; padding: 0">
{% for role in roles %}
<li><button type="submit" name="role" value="{{ role }}">Sign in as
{{ role.replace("_", " ") }}</button></li>
{% endfor %}
</ul>
</form>
{% endif %}
</main>
</body>
</html>
"""
)
