"""What every request handler of the console reaches: the console itself (settings, the backend
to the services, the clock, the roles, the templates), kept on the application as
``request.app.state.console``; the signed-in user a handler acts as; the layout's rendering; the
forms' CSRF check.

Apart from app.py, which builds the application from the page modules, so that those modules
import this one at the top: while it lived in app.py, which imports them, each reached it from
inside its functions through a helper of its own."""

from __future__ import annotations

import hmac
import secrets
import time
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from services.common.auth.roles import Roles
from services.common.clock import Clock
from services.console.auth import MY_NOTIFICATIONS, PAGE, User, current_user, oauth_client
from services.console.backend import Backend
from services.console.settings import ConsoleSettings

HERE = Path(__file__).parent
CSRF = "csrf"


class NotSignedIn(Exception):
    """The page needs a signed-in user (or the session's token has expired)."""


class Refused(Exception):
    """The user is signed in but may not open this page (their roles lack its permissions)."""


class Console:
    """What every request handler reaches through ``request.app.state.console``."""

    def __init__(
        self, settings: ConsoleSettings, backend: Backend, clock: Clock, roles: Roles
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.clock = clock
        self.roles = roles
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.oauth: Any = None
        if settings.auth_issuer:
            self.oauth = oauth_client(
                settings.auth_issuer,
                settings.client_id,
                settings.client_secret.get_secret_value(),
            )

    def user(
        self, request: Request, page: str | None = None, *, permission: str | None = None
    ) -> User:
        """The signed-in user, allowed to open ``page`` (auth.PAGE's) and holding
        ``permission`` when they are given; NotSignedIn (to the sign-in page) or Refused (the
        403 page) otherwise.

        The one check of who may do what at the console, for a page (the permissions of every
        call it makes to show itself) and for what a page does beyond showing itself (an
        action's RPC, accepting a proposal): every refusal reads the same, and a handler cannot
        forget the expiry or the session's reset. The services still decide on every call,
        from the same roles."""
        user = current_user(request)
        if user is None or user.expired(time.time()):
            request.session.clear()
            raise NotSignedIn
        if page is not None and not user.may_open(PAGE[page], self.roles):
            raise Refused
        if permission is not None and permission not in user.permissions(self.roles):
            raise Refused
        return user

    def render(
        self, request: Request, template: str, status_code: int = 200, **values: Any
    ) -> Response:
        user = current_user(request)
        context = {
            "user": user,
            "nav": user.pages(self.roles) if user else [],
            "me_link": user is not None and user.may_open(MY_NOTIFICATIONS, self.roles),
            "csrf_token": csrf_token(request),
            "current": request.url.path,
            **values,
        }
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def csrf_token(request: Request) -> str:
    token = request.session.get(CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session[CSRF] = token
    return token


async def check_csrf(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token matches the session's (403 otherwise)."""
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    expected = request.session.get(CSRF)
    if not isinstance(expected, str) or not hmac.compare_digest(
        values.get("csrf_token", ""), expected
    ):
        raise HTTPException(403, "The form has expired: open the page again.")
    return values
