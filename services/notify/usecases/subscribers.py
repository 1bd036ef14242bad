"""Subscribers: create, read, list and update (under an ETag). A subscriber belongs to the
organisation it was created in, and another organisation's reads as missing. A signed-in user
reads and changes their own subscriber (notify.self.manage: domain/own.py), found by the token's
subject within its organisation, never by an id, so no other subscriber is within reach."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.crud import checked_change, found
from services.common.db import Database
from services.common.errors import Aborted, PermissionDenied
from services.common.etag import check_etag
from services.common.identity import current_caller
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.notify.domain.model import NO_EXCEPTIONS, Subscriber, validate_subscriber
from services.notify.domain.own import MySettings, User, check_user, own_subscriber
from services.notify.domain.views import StoredSubscriber
from services.notify.domain.webhook_target import WebhookAllowList
from services.notify.store import subscribers


class Subscribers:
    def __init__(
        self, db: Database, clock: Clock, webhooks: WebhookAllowList = NO_EXCEPTIONS
    ) -> None:
        self.db = db
        self.clock = clock
        self.webhooks = webhooks  # the operator's allow-list for webhook targets

    def create(self, session: Session, subscriber: Subscriber) -> StoredSubscriber:
        organisation = current_scope().organisation_for(
            subscriber.organisation_id, "subscriber.organisation_id"
        )
        clean = validate_subscriber(
            replace(subscriber, organisation_id=organisation), webhooks=self.webhooks
        )
        return subscribers.add(session, clean, self.clock.now())

    def get(self, subscriber_id: str) -> StoredSubscriber:
        with self.db.read() as session:
            return _visible(subscribers.get(session, subscriber_id), subscriber_id)

    def list(self, external_ref: str, site_id: str, page: PageRequest) -> list[StoredSubscriber]:
        with self.db.read() as session:
            return subscribers.page(session, external_ref, site_id, page)

    def update(
        self,
        session: Session,
        subscriber_id: str,
        etag: str,
        change: Callable[[StoredSubscriber], Subscriber],
    ) -> StoredSubscriber:
        """``change`` makes the new subscriber from the current one (the request's masked
        fields); it runs with the row locked, after the etag check."""
        current = _visible(subscribers.get(session, subscriber_id, for_update=True), subscriber_id)
        changed = checked_change(
            etag, current.revision, current, change, field="subscriber.etag", resource="subscriber"
        )
        # the organisation and the user it may belong to are not the caller's to move
        changed = replace(
            changed,
            organisation_id=current.subscriber.organisation_id,
            user_subject=current.subscriber.user_subject,
        )
        # the allow-list is asked only when the URL changes: a target allowed once stays so
        url_changed = changed.webhook_url != current.subscriber.webhook_url
        clean = validate_subscriber(changed, webhooks=self.webhooks if url_changed else None)
        return subscribers.replace(session, subscriber_id, clean, self.clock.now())

    # --- the signed-in user's own ---------------------------------------------------------------

    def mine(self) -> StoredSubscriber | None:
        """The caller's own subscriber; None before their first update."""
        user = current_user()
        with self.db.read() as session:
            return subscribers.of_user(session, user.organisation_id, user.subject)

    def update_mine(self, session: Session, etag: str, settings: MySettings) -> StoredSubscriber:
        """Replaces the caller's own settings, making their subscriber at the first call (etag
        empty then). ABORTED when ``etag`` is not the current version's (an empty one once the
        subscriber exists, a given one before it does)."""
        user = current_user()
        current = subscribers.of_user(session, user.organisation_id, user.subject, for_update=True)
        if current is None:
            if etag:
                raise _stale(etag, "none")
            clean = validate_subscriber(
                own_subscriber(settings, user, None), "settings", webhooks=self.webhooks
            )
            try:
                with session.begin_nested():
                    return subscribers.add(session, clean, self.clock.now())
            except IntegrityError as error:  # a concurrent first update made it first
                raise _stale(etag, "another request's") from error
        if not etag:
            raise _stale(etag, "another request's")
        check_etag(etag, current.revision, field="settings.etag", resource="your settings")
        # the webhook (an operator's doing, not the user's) is kept as it is: no new check
        clean = validate_subscriber(
            own_subscriber(settings, user, current.subscriber), "settings", webhooks=None
        )
        return subscribers.replace(session, current.id, clean, self.clock.now())


def current_user() -> User:
    """The running call's caller as the owner of a subscriber (PERMISSION_DENIED for a token
    that cannot own one: no organisation)."""
    caller = current_caller()
    if caller.kind != "user":
        raise PermissionDenied("one's own notification settings are a person's, not a system's")
    user = User(
        subject=caller.subject,
        organisation_id=caller.organisation_id or "",
        site_ids=caller.site_ids,
        permissions=caller.permissions,
    )
    check_user(user)
    return user


def _stale(etag: str, current: str) -> Aborted:
    return Aborted(
        f"your settings were changed since you read them (etag {etag or 'empty'} is stale; "
        f"the current version is {current}): read them again and re-apply your change",
        reason="STALE_ETAG",
    )


def _visible(stored: StoredSubscriber | None, subscriber_id: str) -> StoredSubscriber:
    """The subscriber, or NOT_FOUND when there is none or it is out of the caller's scope."""
    visible = found(stored, "subscriber", subscriber_id)
    current_scope().check("subscriber", subscriber_id, visible.subscriber.organisation_id)
    return visible
