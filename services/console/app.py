"""The console's ASGI application (Starlette): sign-in and out, the health check and the error
pages; the pages themselves are in pages.py and the other page modules, and what every handler
reaches (the console's state, the signed-in user, the layout, the CSRF check) in context.py.

``create_app`` takes everything from outside as arguments (settings, the backend, a clock, the
roles), so tests run it against their own services with Starlette's TestClient."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.common.auth.claims import ClaimNames
from services.common.auth.roles import Roles
from services.common.clock import Clock, SystemClock
from services.console import actions, live, me, pages, regimen_page, schedule_page
from services.console.auth import current_user, remember
from services.console.backend import Backend
from services.console.context import Console, NotSignedIn, Refused, check_csrf, console
from services.console.refusals import GRPC_STATUS
from services.console.settings import ConsoleSettings

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


# -- sign-in -----------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    c = console(request)
    user = current_user(request)
    if user is not None and not user.expired(time.time()):
        available = user.pages(c.roles)
        if available:
            return RedirectResponse(available[0].path, status_code=303)
    return c.render(request, "home.html", signed_in=user is not None)


async def login(request: Request) -> Response:
    c = console(request)
    if c.oauth is None:
        raise HTTPException(503, "Sign-in is not configured (AUTH_ISSUER).")
    target = request.query_params.get("next", "/")
    request.session["next"] = target if local_path(target) else "/"
    base = c.settings.public_url.rstrip("/") if c.settings.public_url else ""
    redirect_uri = f"{base}/auth/callback" if base else str(request.url_for("callback"))
    result: Response = await c.oauth.authorize_redirect(request, redirect_uri)
    return result


def local_path(target: str) -> bool:
    """A path on this site (never another one: ``//host`` and ``/\\host`` are other sites
    to a browser)."""
    return target.startswith("/") and not target.startswith(("//", "/\\")) and "\n" not in target


async def callback(request: Request) -> Response:
    c = console(request)
    if c.oauth is None:
        raise HTTPException(503, "Sign-in is not configured (AUTH_ISSUER).")
    if "error" in request.query_params:
        raise HTTPException(400, f"Sign-in failed: {request.query_params['error']}")
    target = request.session.get("next", "/")
    try:
        token = await c.oauth.authorize_access_token(request)
    except Exception as error:  # Authlib's OAuthError and the ID token's checks
        log.info("sign-in refused: %s", error)
        raise HTTPException(400, "Sign-in failed: start again.") from None
    claims = token.get("userinfo") or {}
    if not claims or "access_token" not in token:
        raise HTTPException(400, "Sign-in failed: the issuer sent no ID token.")
    names = ClaimNames(
        organisation=c.settings.auth_claim_organisation,
        sites=c.settings.auth_claim_sites,
        roles=c.settings.auth_claim_roles,
    )
    remember(request.session, dict(claims), token["access_token"], names)
    log.info("signed in: %s (%s)", claims.get("sub"), ",".join(claims.get("roles") or []))
    return RedirectResponse(target if isinstance(target, str) else "/", status_code=303)


async def logout(request: Request) -> Response:
    await check_csrf(request)
    request.session.clear()
    return RedirectResponse("/", status_code=303)


# -- health ------------------------------------------------------------------------------------


def healthz(request: Request) -> Response:
    """200 when the three services answer grpc.health SERVING, else 503; each one's answer."""
    found = console(request).backend.health()
    ok = all(status == "SERVING" for status in found.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "services": found}, 200 if ok else 503
    )


def livez(request: Request) -> Response:
    """The process answers (the liveness probe: the services' health is /healthz's)."""
    return JSONResponse({"status": "ok"})


# -- errors ------------------------------------------------------------------------------------


async def not_signed_in(request: Request, error: Exception) -> Response:
    if request.headers.get("HX-Request"):
        return Response(status_code=401, headers={"HX-Redirect": "/login"})
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={_quote(path)}", status_code=303)


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="")


async def refused(request: Request, error: Exception) -> Response:
    return console(request).render(
        request,
        "error.html",
        status_code=403,
        title="Not allowed",
        message="Your role does not give you this page. The navigation shows the pages you "
        "may open.",
    )


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return console(request).render(
        request, "error.html", status_code=error.status_code, title="Sorry", message=error.detail
    )


async def rpc_error(request: Request, error: Exception) -> Response:
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    if code == grpc.StatusCode.UNAUTHENTICATED:
        request.session.clear()
        return await not_signed_in(request, error)
    status, title = GRPC_STATUS.get(code, (502, "A service failed"))
    details = error.details() if isinstance(error, grpc.Call) else ""
    log.info("%s %s: %s %s", request.method, request.url.path, code.name, details)
    message = details if status < 500 else "Please try again in a moment."
    return console(request).render(
        request, "error.html", status_code=status, title=title, message=message
    )


# -- the application ---------------------------------------------------------------------------


def create_app(
    settings: ConsoleSettings,
    *,
    backend: Backend | None = None,
    clock: Clock | None = None,
    roles: Roles | None = None,
) -> Starlette:
    secret = settings.session_secret.get_secret_value() or secrets.token_urlsafe(32)
    state = Console(
        settings,
        backend or Backend.connect(settings),
        clock or SystemClock(),
        roles or Roles.default(),
    )
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/login", login),
            Route("/auth/callback", callback, name="callback"),
            Route("/logout", logout, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/livez", livez),
            *pages.routes(),
            *schedule_page.routes(),
            *regimen_page.routes(),
            *me.routes(),
            *live.routes(),
            *actions.routes(),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="console_session",
                max_age=settings.session_max_age_seconds,
                same_site="lax",
                https_only=settings.secure_cookies,
            )
        ],
        exception_handlers={
            NotSignedIn: not_signed_in,
            Refused: refused,
            HTTPException: http_error,
            grpc.RpcError: rpc_error,
        },
    )
    app.state.console = state
    return app
