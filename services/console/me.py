"""The signed-in user's own page, ``/me/notifications``: the notifications they receive (topic,
when, delivery status, the message's text) and a form for their own preferences (name, time
zone, email, phone, quiet hours, channels per topic). Everything goes through notify's
self-service calls (notify.self.manage) with the user's token: notify finds the user's own
subscriber from the token, so this page has no way to name anyone else's."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import grpc
from google.rpc import error_details_pb2
from google.type import timeofday_pb2
from grpc_status import rpc_status
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from infusion.notify.v1 import notify_pb2 as npb
from services.common import topics
from services.common.time_zones import is_valid_time_zone
from services.console.auth import MY_NOTIFICATIONS
from services.console.context import Console, check_csrf, console

if TYPE_CHECKING:
    from services.console.auth import User

PATH = MY_NOTIFICATIONS.path
DEFAULT_ZONE = "Europe/London"
PAGE_SIZE = 25
# the channels a user picks here (a webhook is an operator's, set on the subscriber)
CHANNELS = (
    ("EMAIL", "Email", npb.CHANNEL_EMAIL),
    ("SMS", "Text message", npb.CHANNEL_SMS),
    ("CONSOLE", "Console log", npb.CHANNEL_CONSOLE),
)
# stream-only signals (BOARD_CHANGED, for the live board) go to no channel: not offered here
SIGNAL_TOPICS = frozenset(npb.Topic.Value(f"TOPIC_{name}") for name in topics.STREAM_ONLY)
TOPICS = [
    int(v) for v in npb.Topic.values() if v != npb.TOPIC_UNSPECIFIED and v not in SIGNAL_TOPICS
]
CRITICAL_TOPICS = frozenset(npb.Topic.Value(f"TOPIC_{name}") for name in topics.CRITICAL)
LABELS = {
    "display_name": "Name",
    "time_zone": "Time zone",
    "email": "Email",
    "phone": "Phone",
    "quiet_hours": "Quiet hours",
}


def topic_label(topic: int) -> str:
    return npb.Topic.Name(topic).removeprefix("TOPIC_").replace("_", " ").capitalize()


def status_label(status: int) -> str:
    name = npb.DeliveryStatus.Name(status).removeprefix("DELIVERY_STATUS_")
    return name.replace("_", " ").lower()


@dataclass(frozen=True)
class TopicChoice:
    topic: int
    name: str  # the form field's
    label: str
    critical: bool
    chosen: frozenset[str]  # channel names ticked


def form_of(settings: npb.MyNotificationSettings) -> dict[str, Any]:
    """The form's values from settings as read (or as posted, after a refusal)."""
    chosen: dict[int, set[str]] = {
        int(p.topic): {npb.Channel.Name(c).removeprefix("CHANNEL_") for c in p.channels}
        for p in settings.preferences
    }
    quiet = settings.quiet_hours if settings.HasField("quiet_hours") else None
    return {
        "display_name": settings.display_name,
        "time_zone": settings.time_zone or DEFAULT_ZONE,
        "email": settings.email,
        "phone": settings.phone,
        "quiet_start": f"{quiet.start.hours:02d}:{quiet.start.minutes:02d}" if quiet else "",
        "quiet_end": f"{quiet.end.hours:02d}:{quiet.end.minutes:02d}" if quiet else "",
        "etag": settings.etag,
        "topics": [
            TopicChoice(
                topic=t,
                name=f"topic_{npb.Topic.Name(t).removeprefix('TOPIC_').lower()}",
                label=topic_label(t),
                critical=t in CRITICAL_TOPICS,
                chosen=frozenset(chosen.get(t, set())),
            )
            for t in TOPICS
        ],
    }


def settings_from(form: Any) -> tuple[npb.MyNotificationSettings, list[str]]:
    """The settings a posted form asks for, and what the console itself cannot read of it
    (a time that is not HH:MM). A topic with no channel ticked is switched off, except a
    critical one, which is left without a preference (it cannot be switched off)."""
    problems: list[str] = []
    settings = npb.MyNotificationSettings(
        display_name=_text(form, "display_name"),
        time_zone=_text(form, "time_zone"),
        email=_text(form, "email"),
        phone=_text(form, "phone"),
        etag=_text(form, "etag"),
    )
    start, end = _time(form, "quiet_start", problems), _time(form, "quiet_end", problems)
    if start is not None and end is not None:
        settings.quiet_hours.start.CopyFrom(start)
        settings.quiet_hours.end.CopyFrom(end)
    elif (start is None) != (end is None) and not problems:
        problems.append("Quiet hours: give both the start and the end, or neither.")
    by_name = {name: value for name, _, value in CHANNELS}
    for choice in form_of(npb.MyNotificationSettings())["topics"]:
        ticked = [by_name[c] for c in form.getlist(choice.name) if c in by_name]
        if ticked or not choice.critical:
            settings.preferences.add(topic=choice.topic, channels=ticked)
    return settings, problems


def _text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value.strip()[:400] if isinstance(value, str) else ""


def _time(form: Any, name: str, problems: list[str]) -> timeofday_pb2.TimeOfDay | None:
    value = _text(form, name)
    if not value:
        return None
    found = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)(?::[0-5]\d)?", value)
    if not found:
        problems.append(f"Quiet hours: {value!r} is not a time of day (HH:MM).")
        return None
    return timeofday_pb2.TimeOfDay(hours=int(found.group(1)), minutes=int(found.group(2)))


def refusal_lines(error: grpc.RpcError, sent: npb.MyNotificationSettings) -> list[str]:
    """notify's field violations, each as the form's label and notify's description."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    lines = []
    for packed in status.details if status else ():
        if not packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            continue
        bad = error_details_pb2.BadRequest()
        packed.Unpack(bad)
        for v in bad.field_violations:
            lines.append(f"{_field_label(v.field, sent)}: {v.description}")
    return lines or [error.details() if isinstance(error, grpc.Call) else "Not accepted."]


def _field_label(path: str, sent: npb.MyNotificationSettings) -> str:
    name = path.removeprefix("settings.")
    topic = re.match(r"preferences\[(\d+)\]", name)
    if topic and int(topic.group(1)) < len(sent.preferences):
        return topic_label(sent.preferences[int(topic.group(1))].topic)
    return LABELS.get(name.split(".")[0], path)


def notification_rows(listed: npb.ListMyNotificationsResponse, zone: str) -> list[dict[str, Any]]:
    tz = ZoneInfo(zone if is_valid_time_zone(zone) else "UTC")
    rows = []
    for n in listed.notifications:
        when = n.create_time.ToDatetime(tzinfo=dt.UTC).astimezone(tz)
        rows.append(
            {
                "topic": topic_label(n.topic),
                "when": when.strftime("%Y-%m-%d %H:%M"),
                "when_iso": when.isoformat(),
                "statuses": [
                    f"{npb.Channel.Name(d.channel).removeprefix('CHANNEL_').capitalize()}: "
                    f"{status_label(d.status)}"
                    + (" (held for quiet hours)" if d.deferred_by_quiet_hours else "")
                    for d in n.deliveries
                ],
                "cancelled": n.HasField("cancel_time"),
                "subject": n.subject,
                "text": n.text,
            }
        )
    return rows


# -- the handlers --------------------------------------------------------------------------------


def _read(c: Console, user: User, page_token: str) -> tuple[npb.MyNotificationSettings, Any]:
    calls = c.backend.as_user(user.token)
    settings = calls.notify.GetMyNotificationSettings(npb.GetMyNotificationSettingsRequest())
    listed = calls.notify.ListMyNotifications(
        npb.ListMyNotificationsRequest(page_size=PAGE_SIZE, page_token=page_token)
    )
    return settings.settings, listed


def _render(
    c: Console,
    request: Request,
    user: User,
    form: npb.MyNotificationSettings,
    listed: npb.ListMyNotificationsResponse,
    status_code: int = 200,
    **values: Any,
) -> Response:
    return c.render(
        request,
        "me_notifications.html",
        status_code=status_code,
        form=form_of(form),
        channels=CHANNELS,
        notifications=notification_rows(listed, form.time_zone),
        next_page=listed.next_page_token,
        request_id=str(uuid.uuid4()),
        **values,
    )


async def my_notifications(request: Request) -> Response:
    c = console(request)
    user = c.user(request, MY_NOTIFICATIONS.name)
    page_token = request.query_params.get("page", "")[:512]
    settings, listed = await run_in_threadpool(_read, c, user, page_token)
    saved = request.query_params.get("saved") == "1"
    return _render(c, request, user, settings, listed, saved=saved, paged=bool(page_token))


async def save_my_settings(request: Request) -> Response:
    """UpdateMyNotificationSettings with the whole form, the etag it was read at and a request
    id (a double click saves once); a refusal shows the form again with notify's reasons."""
    c = console(request)
    user = c.user(request, MY_NOTIFICATIONS.name)
    await check_csrf(request)
    form = await request.form()
    settings, problems = settings_from(form)
    request_id = f"console-{_text(form, 'request_id') or uuid.uuid4()}"[:128]
    if not problems:
        try:
            await run_in_threadpool(
                c.backend.as_user(user.token).notify.UpdateMyNotificationSettings,
                npb.UpdateMyNotificationSettingsRequest(settings=settings, request_id=request_id),
            )
            return RedirectResponse(f"{PATH}?saved=1", status_code=303)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            if code == grpc.StatusCode.ABORTED:
                current, listed = await run_in_threadpool(_read, c, user, "")
                problem = (
                    "Your settings were changed elsewhere (another tab or window) since this "
                    "page was opened. Here they are as saved now: make your change again."
                )
                return _render(c, request, user, current, listed, 409, problems=[problem])
            if code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            problems = refusal_lines(error, settings)
    _, listed = await run_in_threadpool(_read, c, user, "")
    return _render(c, request, user, settings, listed, 400, problems=problems)


def routes() -> list[Route]:
    return [
        Route(PATH, my_notifications),
        Route(PATH, save_my_settings, methods=["POST"]),
    ]
