"""Subscribers: create, read, list and update (under an ETag). A subscriber belongs to the
organisation it was created in, and another organisation's reads as missing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.crud import checked_change, found
from services.common.db import Database
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.notify.domain.model import NO_EXCEPTIONS, Subscriber, validate_subscriber
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
        # the organisation is not the caller's to move
        changed = replace(changed, organisation_id=current.subscriber.organisation_id)
        # the allow-list is asked only when the URL changes: a target allowed once stays so
        url_changed = changed.webhook_url != current.subscriber.webhook_url
        clean = validate_subscriber(changed, webhooks=self.webhooks if url_changed else None)
        return subscribers.replace(session, subscriber_id, clean, self.clock.now())


def _visible(stored: StoredSubscriber | None, subscriber_id: str) -> StoredSubscriber:
    """The subscriber, or NOT_FOUND when there is none or it is out of the caller's scope."""
    visible = found(stored, "subscriber", subscriber_id)
    current_scope().check("subscriber", subscriber_id, visible.subscriber.organisation_id)
    return visible
