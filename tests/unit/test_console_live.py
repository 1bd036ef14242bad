"""The live board's stream logic (services/console/live.py) without a network: where a
reconnect resumes, which changes concern a board's day, and what the browser is sent for
each message of notify's stream."""

from __future__ import annotations

import datetime as dt
import threading

import anyio

from infusion.notify.v1 import notify_pb2 as npb
from services.common.convert import from_date
from services.console.live import _forward, board_messages, concerns, cursor_from

DAY = dt.date(2026, 11, 24)


def change(day: dt.date, previous: dt.date | None = None) -> npb.BoardChangedPayload:
    payload = npb.BoardChangedPayload(
        appointment_id="a-1",
        site_id="s-1",
        local_date=from_date(day),
        status="BOOKED",
        revision=3,
        stock_status="AT_RISK",
    )
    if previous is not None:
        payload.previous_local_date.CopyFrom(from_date(previous))
    return payload


def event(sequence: int, payload: npb.BoardChangedPayload) -> npb.SubscribeResponse:
    return npb.SubscribeResponse(
        event=npb.NotificationEvent(
            sequence=sequence,
            kind=npb.NotificationEvent.KIND_PUBLISHED,
            notification=npb.Notification(
                topic=npb.TOPIC_BOARD_CHANGED, payload=npb.Payload(board_changed=payload)
            ),
        )
    )


def test_a_reconnect_resumes_after_the_last_event_id_and_a_stranger_id_starts_at_the_end() -> None:
    assert cursor_from("41") == 41
    for unusable in (None, "", "-1", "4x", "1e9", "9" * 19):
        assert cursor_from(unusable) == 0


def test_a_change_concerns_its_day_and_the_day_a_move_left() -> None:
    assert concerns(change(DAY), DAY)
    assert not concerns(change(DAY + dt.timedelta(days=1)), DAY)
    moved_away = change(DAY + dt.timedelta(days=2), previous=DAY)
    assert concerns(moved_away, DAY) and concerns(moved_away, DAY + dt.timedelta(days=2))
    assert not concerns(npb.BoardChangedPayload(), DAY)  # no day at all


def test_the_browser_gets_board_events_for_its_day_and_ids_for_the_rest() -> None:
    stream = [
        npb.SubscribeResponse(heartbeat=npb.Heartbeat(sequence=7)),
        event(8, change(DAY)),
        event(9, change(DAY + dt.timedelta(days=1))),
    ]
    sent = [m.encode().decode() for m in board_messages(iter(stream), DAY) if m is not None]
    assert sent[0].startswith("id: 7\r\nevent: heartbeat\r\n")
    assert sent[1].startswith("id: 8\r\nevent: board\r\n")
    assert (
        'data: {"appointment_id": "a-1", "status": "BOOKED", "stock_status": "AT_RISK", '
        '"revision": 3}' in sent[1]
    )
    assert "patient" not in sent[1]
    assert sent[2].startswith("id: 9\r\nevent: heartbeat\r\n")  # another day: the cursor only


class HangingCall:
    """A Subscribe call that sends a heartbeat, then waits until it is cancelled (as a quiet
    stream does), recording the cancel."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.sent = False

    def __iter__(self) -> HangingCall:
        return self

    def __next__(self) -> npb.SubscribeResponse:
        if not self.sent:
            self.sent = True
            return npb.SubscribeResponse(heartbeat=npb.Heartbeat(sequence=5))
        self.cancelled.wait(30)
        raise StopIteration

    def cancel(self) -> None:
        self.cancelled.set()


def test_the_browser_leaving_cancels_notifys_stream() -> None:
    """sse-starlette cancels the generator when the client goes; the Subscribe call must end
    with it rather than hold a notify stream and a thread until its idle timeout."""
    call = HangingCall()

    async def browse_then_leave() -> str:
        messages = _forward(call, DAY)
        first = await messages.__anext__()
        with anyio.move_on_after(0.2):  # the browser waits a little, then closes the tab
            await messages.__anext__()
        await messages.aclose()
        return first.encode().decode()

    first = anyio.run(browse_then_leave)
    assert first.startswith("id: 5\r\nevent: heartbeat\r\n") and "retry: 2000" in first
    assert call.cancelled.is_set()
