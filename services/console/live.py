"""The chair board, live: ``GET /board/events?site=&date=`` is a server-sent-events stream that
tells a board page its day changed, so a ward PC or wall screen shows a booking, a move, a
cancel, a check-in, start, completion or no-show and a stock-at-risk flag within a second or
two, without reloading (docs/console.md, "The live board").

The console holds no state of its own: the stream is notify's Subscribe, opened with the
signed-in user's token (so notify decides what this user may see: their organisation, their
sites, and, without ``notify.notifications.read``, the ids-only BOARD_CHANGED signal and
nothing else), filtered to the board's site, and forwarded for the board's day. The page then
fetches its rows again (board_rows.html) as it always has.

- Each event's ``id`` is notify's sequence, so the browser's automatic reconnect (with
  ``Last-Event-ID``) resumes where it stopped, with no gap and no repeat; without one the
  stream starts at the end (``live_only``: the page has just read the board).
- notify's heartbeats go on as id-only ``heartbeat`` events (the cursor moves on while the day
  is quiet), and sse-starlette adds a comment ping every ``PING_SECONDS`` so proxies keep an
  idle connection open.
- When the browser leaves, sse-starlette cancels the generator and the gRPC call is cancelled
  with it; when notify ends the stream (idle, shutting down) the response ends and the browser
  reconnects after ``RETRY_MILLISECONDS``.
- A user whose roles do not hold ``notify.notifications.subscribe`` gets 204, which tells
  EventSource not to reconnect: the page falls back to polling.

The gRPC stream is blocking, so each open stream waits in a worker thread of its own limiter
(``STREAMS``), never in the pool the pages' handlers run in: fifty wall screens must not
starve the pages."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import grpc
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from infusion.notify.v1 import notify_pb2 as npb
from services.common.convert import to_date
from services.console.context import console

log = logging.getLogger(__name__)

SUBSCRIBE = "notify.notifications.subscribe"
PING_SECONDS = 15
RETRY_MILLISECONDS = 2000
STREAMS = anyio.CapacityLimiter(500)
"""At most this many boards listen at once per console process; one more waits for a free
slot (its page keeps what it shows, and falls back to polling if the wait ends in an error)."""


def cursor_from(last_event_id: str | None) -> int:
    """The sequence to resume after: the browser's ``Last-Event-ID`` (our ids are notify's
    sequences), 0 when absent or not one of ours."""
    if not last_event_id or not last_event_id.isdigit() or len(last_event_id) > 18:
        return 0
    return int(last_event_id)


def concerns(payload: npb.BoardChangedPayload, day: dt.date) -> bool:
    """Whether a BOARD_CHANGED changes the board of ``day``: the booking's day, or the day a
    move took it from."""
    days = [payload.local_date, payload.previous_local_date]
    return any(d.year and to_date(d) == day for d in days)


def board_messages(items: Iterator[Any], day: dt.date) -> Iterator[ServerSentEvent | None]:
    """What the browser is sent for each message of the stream: a ``board`` event (ids only)
    for a change of ``day``, an id-only ``heartbeat`` for the rest (a heartbeat, another day's
    change), so the cursor the browser resumes from always moves on."""
    for item in items:
        if item.HasField("heartbeat"):
            yield ServerSentEvent("", event="heartbeat", id=str(item.heartbeat.sequence))
            continue
        e = item.event
        change = e.notification.payload.board_changed
        if not concerns(change, day):
            yield ServerSentEvent("", event="heartbeat", id=str(e.sequence))
            continue
        data = {
            "appointment_id": change.appointment_id,
            "status": change.status,
            "stock_status": change.stock_status,
            "revision": change.revision,
        }
        yield ServerSentEvent(json.dumps(data), event="board", id=str(e.sequence))


async def board_events(request: Request) -> Response:
    c = console(request)
    user = c.user(request, "board")
    site = request.query_params.get("site", "")
    if not site or not user.sees_site(site):
        raise HTTPException(404, "No such site.")
    try:
        day = dt.date.fromisoformat(request.query_params.get("date", ""))
    except ValueError:
        raise HTTPException(400, "date is required (YYYY-MM-DD).") from None
    if SUBSCRIBE not in user.permissions(c.roles):
        return Response(status_code=204)
    cursor = cursor_from(request.headers.get("last-event-id"))
    call = c.backend.as_user(user.token).subscribe(
        npb.SubscribeRequest(
            topics=[npb.TOPIC_BOARD_CHANGED],
            site_id=site,
            after_sequence=cursor,
            live_only=cursor == 0,
        )
    )
    return EventSourceResponse(
        _forward(call, day),
        ping=PING_SECONDS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _forward(call: Any, day: dt.date) -> AsyncIterator[ServerSentEvent]:
    """The stream's messages, read in a worker thread of STREAMS; the call is cancelled
    whatever ends this (the browser leaving cancels the generator)."""
    messages = board_messages(call, day)
    first = True
    try:
        while True:
            message = await anyio.to_thread.run_sync(
                next, messages, None, limiter=STREAMS, abandon_on_cancel=True
            )
            if message is None:
                return
            if first:  # how long the browser waits before reconnecting
                message.retry = RETRY_MILLISECONDS
                first = False
            yield message
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        if code != grpc.StatusCode.CANCELLED:
            log.info("board events: notify's stream ended: %s", code)
    finally:
        call.cancel()


def routes() -> list[BaseRoute]:
    return [Route("/board/events", board_events)]
