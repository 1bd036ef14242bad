"""The optimiser's schedule at the console: a coordinator asks PlanSchedule for a site's next
days, sees the proposed infusions drawn on each day's chair board next to what is booked, and
books them with one confirmation. Proposing and booking are separate calls with the same input
and seed, which give the same schedule; the page sends back a fingerprint of what it showed,
so the booking says plainly when a change in between (a booking, a cancellation) made the
optimiser book something else."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console import planning, reads, views
from services.console.backend import UserCalls
from services.console.choosing import chosen_site, local_today
from services.console.context import Console, check_csrf, console

if TYPE_CHECKING:
    from services.console.auth import User

DEFAULT_DAYS = 7
MAX_DAYS = 28  # a page of boards; the command line plans up to 92
DEFAULT_TIME_LIMIT = 10
SOLVER_SLACK_SECONDS = 30  # the call's deadline past the solver's limit: reads, booking


@dataclasses.dataclass(frozen=True)
class Ask:
    first: dt.date
    days: int
    time_limit: int
    skip_without_stock: bool

    def as_form(self) -> dict[str, str]:
        return {
            "date": self.first.isoformat(),
            "days": str(self.days),
            "time_limit": str(self.time_limit),
            "skip_without_stock": "1" if self.skip_without_stock else "",
        }


def _bounded(values: Any, name: str, default: int, low: int, high: int) -> int:
    raw = values.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name}: a whole number.") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name}: from {low} to {high}.")
    return value


def _ask(values: Any, today: dt.date) -> Ask:
    raw = values.get("date") or ""
    try:
        first = dt.date.fromisoformat(raw) if raw else today
    except ValueError:
        raise HTTPException(400, f"Not a date: {raw!r} (YYYY-MM-DD).") from None
    return Ask(
        first,
        _bounded(values, "days", DEFAULT_DAYS, 1, MAX_DAYS),
        _bounded(values, "time_limit", DEFAULT_TIME_LIMIT, 1, planning.MAX_TIME_LIMIT_SECONDS),
        bool(values.get("skip_without_stock")),
    )


def _context(request: Request) -> tuple[Console, User, UserCalls, list[Any], Any]:
    c = console(request)
    user = c.user(request, "plan")
    calls = c.backend.as_user(user.token)
    sites = reads.sites(calls, user.organisation, user.sees_site)
    return c, user, calls, sites, chosen_site(sites, request.query_params.get("site"))


def _solver_calls(c: Console, user: User, ask: Ask) -> UserCalls:
    """The user's calls with a deadline the solver's time limit fits in."""
    backend = dataclasses.replace(c.backend, timeout=ask.time_limit + SOLVER_SLACK_SECONDS)
    return backend.as_user(user.token)


def _boards(calls: UserCalls, site: Any, planned: planning.Planned) -> list[dict[str, Any]]:
    """What the template draws per day (board_rows.html's names)."""
    return [
        {
            "day": day,
            "count": count,
            "rows": board.rows,
            "hour_marks": board.hour_marks,
            "axis": (views.clock(board.axis.start), views.clock(board.axis.end)),
            "load": board.load,
        }
        for day, board, count in planning.boards_with_proposals(calls, site, planned)
    ]


def plan_form(request: Request) -> Response:
    c, _, _, sites, site = _context(request)
    ask = _ask(request.query_params, local_today(c.clock, site.time_zone))
    return c.render(request, "plan.html", site=site, sites=sites, ask=ask, planned=None)


def _planned(
    c: Console, user: User, site: Any, ask: Ask, request_id: str
) -> tuple[planning.Planned, list[dict[str, Any]]]:
    """PlanSchedule as asked (booked when ``request_id`` is given), and its days' boards."""
    calls = _solver_calls(c, user, ask)
    planned = planning.plan_schedule(
        calls,
        site.id,
        ask.first,
        ask.days,
        commit=bool(request_id),
        time_limit_seconds=ask.time_limit,
        skip_without_stock=ask.skip_without_stock,
        request_id=request_id,
    )
    return planned, _boards(calls, site, planned)


async def propose(request: Request) -> Response:
    c, user, _, sites, site = await run_in_threadpool(_context, request)
    ask = _ask(await check_csrf(request), local_today(c.clock, site.time_zone))
    planned, boards = await run_in_threadpool(_planned, c, user, site, ask, "")
    return c.render(
        request,
        "plan.html",
        site=site,
        sites=sites,
        ask=ask,
        planned=planned,
        boards=boards,
        fingerprint=planning.fingerprint(planned),
        request_id=str(uuid.uuid4()),
    )


async def book(request: Request) -> Response:
    c, user, _, sites, site = await run_in_threadpool(_context, request)
    values = await check_csrf(request)
    ask = _ask(values, local_today(c.clock, site.time_zone))
    request_id = f"console-plan-{values.get('request_id') or uuid.uuid4()}"[:128]
    booked, boards = await run_in_threadpool(_planned, c, user, site, ask, request_id)
    return c.render(
        request,
        "plan_booked.html",
        site=site,
        sites=sites,
        ask=ask,
        planned=booked,
        boards=boards,
        same=planning.fingerprint(booked) == values.get("fingerprint"),
    )


def routes() -> list[Route]:
    return [
        Route("/plan", plan_form),
        Route("/plan/propose", propose, methods=["POST"]),
        Route("/plan/book", book, methods=["POST"]),
    ]
