"""NotifyService's servicer: every RPC of the service, each translating its request (api/
messages.py), calling one use case and translating the answer. No rules live here.

Mutations run through ``mutate`` (services/common/crud.py): once per request_id, in one write
transaction with the stored response. Subscribe hands its stream to ``streams``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from sqlalchemy.orm import Session

from infusion.notify.v1 import notify_pb2 as pb
from infusion.notify.v1 import notify_pb2_grpc as pb_grpc
from services.common.crud import Mutations, listed, masked, parsed
from services.common.errors import FieldViolation, InvalidArgument, Violations
from services.notify.api.messages import (
    MUTABLE,
    my_notification_out,
    notification_out,
    publish_in,
    settings_in,
    settings_out,
    status_in,
    subscriber_in,
    subscriber_out,
    topic_in,
    topics_in,
)
from services.notify.api.stream import EventStreams
from services.notify.domain.model import Subscriber
from services.notify.domain.views import StoredSubscriber
from services.notify.usecases.events import EventLog
from services.notify.usecases.notifications import Notifications
from services.notify.usecases.subscribers import Subscribers, current_user


class NotifyServicer(pb_grpc.NotifyServiceServicer):
    def __init__(
        self,
        subscribers: Subscribers,
        notifications: Notifications,
        events: EventLog,
        mutate: Mutations,
        streams: EventStreams,
        *,
        on_publish: Callable[[], None] = lambda: None,
    ) -> None:
        self.subscribers = subscribers
        self.notifications = notifications
        self.events = events
        self.mutate = mutate
        self.streams = streams
        self.on_publish = on_publish  # wakes the dispatcher

    # --- subscribers --------------------------------------------------------------------------

    def CreateSubscriber(
        self, request: pb.CreateSubscriberRequest, context: grpc.ServicerContext
    ) -> Any:
        subscriber = parsed(subscriber_in, request.subscriber)
        return self.mutate(
            "CreateSubscriber",
            request,
            pb.CreateSubscriberResponse,
            lambda s: pb.CreateSubscriberResponse(
                subscriber=subscriber_out(self.subscribers.create(s, subscriber))
            ),
        )

    def GetSubscriber(self, request: pb.GetSubscriberRequest, context: grpc.ServicerContext) -> Any:
        if not request.id:
            raise InvalidArgument([FieldViolation("id", "is required")])
        return pb.GetSubscriberResponse(subscriber=subscriber_out(self.subscribers.get(request.id)))

    def ListSubscribers(
        self, request: pb.ListSubscribersRequest, context: grpc.ServicerContext
    ) -> Any:
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=f"subscribers:{request.external_ref}:{request.site_id}",
            fetch=lambda page: self.subscribers.list(request.external_ref, request.site_id, page),
            key=lambda s: [s.id],
        )
        return pb.ListSubscribersResponse(
            subscribers=[subscriber_out(s) for s in rows], next_page_token=token
        )

    def UpdateSubscriber(
        self, request: pb.UpdateSubscriberRequest, context: grpc.ServicerContext
    ) -> Any:
        patch = request.subscriber
        if not patch.id:
            raise InvalidArgument([FieldViolation("subscriber.id", "is required")])

        def change(current: StoredSubscriber) -> Subscriber:
            return masked(
                subscriber_out(current, with_secret=True),
                patch,
                request.update_mask,
                MUTABLE,
                prefix="subscriber",
                translate=subscriber_in,
            )

        def update(session: Session) -> pb.UpdateSubscriberResponse:
            stored = self.subscribers.update(session, patch.id, patch.etag, change)
            return pb.UpdateSubscriberResponse(subscriber=subscriber_out(stored))

        return self.mutate("UpdateSubscriber", request, pb.UpdateSubscriberResponse, update)

    # --- the signed-in user's own (notify.self.manage) ---------------------------------------

    def GetMyNotificationSettings(
        self, request: pb.GetMyNotificationSettingsRequest, context: grpc.ServicerContext
    ) -> Any:
        return pb.GetMyNotificationSettingsResponse(settings=settings_out(self.subscribers.mine()))

    def UpdateMyNotificationSettings(
        self, request: pb.UpdateMyNotificationSettingsRequest, context: grpc.ServicerContext
    ) -> Any:
        settings = parsed(settings_in, request.settings)
        user = current_user()  # PERMISSION_DENIED before any request_id is claimed

        def update(session: Session) -> pb.UpdateMyNotificationSettingsResponse:
            stored = self.subscribers.update_mine(session, request.settings.etag, settings)
            return pb.UpdateMyNotificationSettingsResponse(settings=settings_out(stored))

        # a request_id is the user's own: another user's same id never replays this answer
        who = hashlib.sha256(user.subject.encode()).hexdigest()[:32]
        return self.mutate(
            f"UpdateMyNotificationSettings:{who}",
            request,
            pb.UpdateMyNotificationSettingsResponse,
            update,
        )

    def ListMyNotifications(
        self, request: pb.ListMyNotificationsRequest, context: grpc.ServicerContext
    ) -> Any:
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope="my-notifications",
            fetch=self.notifications.mine,
            key=lambda n: [n.id],
        )
        return pb.ListMyNotificationsResponse(
            notifications=[my_notification_out(n) for n in rows], next_page_token=token
        )

    # --- notifications ------------------------------------------------------------------------

    def Publish(self, request: pb.PublishRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        command = publish_in(request, v)
        v.raise_if_any()
        assert command is not None  # None only with violations

        wrote: list[bool] = []  # whether this call wrote an event (not a replay, not a dupe)

        def publish(session: Session) -> pb.PublishResponse:
            result = self.notifications.publish(session, command)
            wrote.append(not result.duplicate)
            # a duplicate's payload is the first Publish's, read back; ours is the request's
            published = None if result.duplicate else request.payload
            return pb.PublishResponse(
                notification=notification_out(result.notification, published),
                duplicate=result.duplicate,
            )

        # a Publish's key rides in its one write; without a dedupe key it reads and then
        # makes that write (store/publishing.py), so on PostgreSQL it needs no transaction
        response = self.mutate(
            "Publish",
            request,
            pb.PublishResponse,
            publish,
            key_last=True,
            statementwise=not command.dedupe_key,
        )
        if any(wrote):
            self.events.place()
        self.streams.signal.notify()
        self.on_publish()
        return response

    def CancelNotification(
        self, request: pb.CancelNotificationRequest, context: grpc.ServicerContext
    ) -> Any:
        response = self.mutate(
            "CancelNotification",
            request,
            pb.CancelNotificationResponse,
            lambda s: pb.CancelNotificationResponse(
                notification=notification_out(
                    self.notifications.cancel(s, request.id, request.dedupe_key)
                )
            ),
        )
        self.events.place()
        self.streams.signal.notify()
        return response

    def GetNotification(
        self, request: pb.GetNotificationRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.id:
            raise InvalidArgument([FieldViolation("id", "is required")])
        return pb.GetNotificationResponse(
            notification=notification_out(self.notifications.get(request.id))
        )

    def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        topic = topic_in(request.topic, "topic", v) if request.topic else None
        status = status_in(request.status, "status", v)
        v.raise_if_any()
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=(
                f"notifications:{request.topic}:{request.subscriber_id}:{request.status}:"
                f"{request.dedupe_key}"
            ),
            fetch=lambda page: self.notifications.list(
                page,
                topic=topic,
                subscriber_id=request.subscriber_id,
                status=status,
                dedupe_key=request.dedupe_key,
            ),
            key=lambda n: [n.id],
        )
        return pb.ListNotificationsResponse(
            notifications=[notification_out(n) for n in rows], next_page_token=token
        )

    # --- the stream ---------------------------------------------------------------------------

    def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.SubscribeResponse]:
        v = Violations()
        topics = topics_in(request.topics, "topics", v)
        if request.after_sequence < 0:
            v.add("after_sequence", "must not be negative")
        if request.live_only and request.after_sequence:
            v.add("after_sequence", "must be 0 with live_only (which starts at the end)")
        v.raise_if_any()
        matches = self.events.filter(topics, request.site_id, request.subscriber_ids)
        if request.live_only:
            cursor = self.events.last_sequence()
            yield from self.streams.stream(cursor, matches, context, beat_first=True)
        else:
            yield from self.streams.stream(request.after_sequence, matches, context)
