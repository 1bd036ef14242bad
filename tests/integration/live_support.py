"""What the live board's tests add to console_support's platform: the scheduler's outbox relay
running (the platform starts the scheduler without its jobs; the live board needs BOARD_CHANGED
to reach notify), the console served over HTTP by uvicorn (a server-sent-events stream never
ends, so Starlette's TestClient, which waits for the whole body, cannot read it), a booking of
a due patient made through gRPC, and a reader of the console's event stream."""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from infusion.scheduler.v1 import scheduler_pb2 as pb
from services.common.channels import open_channel
from services.common.db import Database
from services.common.outbox_relay import RelayPolicy
from services.launcher import free_port
from services.scheduler.adapters.notify_relay import relay_to_notify
from tests.integration.console_support import Platform


@contextmanager
def relaying(platform: Platform, directory: Path) -> Iterator[None]:
    """The scheduler's outbox relayed to notify every 0.1 s, as the scheduler itself does with
    its jobs on (``directory`` is the one running_platform was given)."""
    db = Database(f"sqlite:///{directory / 'scheduler.db'}")
    tokens = platform.issuer.service_auth("scheduler").tokens
    channel = open_channel(platform.notify_address, None, tokens)
    relay = relay_to_notify(
        db, platform.clock, channel, RelayPolicy(interval_seconds=0.1), stock=lambda event: None
    )
    relay.start()
    try:
        yield
    finally:
        relay.stop()
        channel.close()


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def a_free_slot(platform: Platform) -> tuple[str, pb.Slot]:
    """The first unbooked due infusion at the demo site with a free slot: (its plan, the
    slot)."""
    scheduler = platform.scheduler()
    due = scheduler.ListDueInfusions(
        pb.ListDueInfusionsRequest(site_id=platform.site_id, horizon_days=28, page_size=100)
    )
    for item in due.due_infusions:
        if item.booked_appointment_id:
            continue
        slots = scheduler.FindSlots(
            pb.FindSlotsRequest(therapy_plan_id=item.therapy_plan_id, max_results=5)
        ).slots
        if slots:
            return item.therapy_plan_id, slots[0]
    raise AssertionError("no due infusion with a free slot in the demo centre")


def book(platform: Platform, plan_id: str, slot: pb.Slot) -> pb.Appointment:
    """The coordinator books ``slot`` for the plan (through gRPC, as the console does)."""
    return (
        platform.scheduler()
        .BookAppointment(
            pb.BookAppointmentRequest(
                therapy_plan_id=plan_id,
                chair_id=slot.chair_id,
                local_date=slot.local_date,
                local_start=slot.local_start,
                request_id=f"live-{plan_id}",
            )
        )
        .appointment
    )


@dataclass
class EventReader:
    """The console's /board/events read in a thread: each SSE event as (event, id, data)."""

    events: queue.Queue[tuple[str, str, str]] = field(default_factory=queue.Queue)
    status: int = 0
    opened: threading.Event = field(default_factory=threading.Event)

    def next_board(self, timeout: float) -> tuple[str, str, str] | None:
        """The next ``board`` event within ``timeout`` seconds (heartbeats skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if event[0] == "board":
                return event
        return None


@contextmanager
def reading_events(
    client: httpx.Client, site_id: str, day: dt.date, last_event_id: str = ""
) -> Iterator[EventReader]:
    """Open the board's event stream as ``client``'s signed-in user; yields once the response
    has started (notify's first heartbeat: the stream is listening)."""
    reader = EventReader()
    stop = threading.Event()
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}

    def read() -> None:
        try:
            _read()
        except httpx.HTTPError:
            if not stop.is_set():  # the test's end closes the client under the read
                raise

    def _read() -> None:
        params = {"site": site_id, "date": day.isoformat()}
        with client.stream(
            "GET", "/board/events", params=params, headers=headers, timeout=None
        ) as answer:
            reader.status = answer.status_code
            reader.opened.set()
            kind, ident, data = "message", "", ""
            for line in answer.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("id:"):
                    ident = line[3:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif not line:
                    if ident or data:
                        reader.events.put((kind, ident, data))
                    kind, ident, data = "message", "", ""

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert reader.opened.wait(30), "the event stream did not open"
    if reader.status == 200:
        first = reader.events.get(timeout=30)  # live_only's first heartbeat, or a resumed event
        if first[0] == "board":
            reader.events.put(first)
    try:
        yield reader
    finally:
        stop.set()
        client.close()  # ends the stream: the console cancels its Subscribe call
