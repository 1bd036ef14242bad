"""The inventory's rows in the caller's scope (docs/security.md, "Scope"). Every row sits at
a site, every write at a site needs its stock site, and the stock site belongs to the
organisation that created it: so a row belongs to its stock site's organisation.

- :func:`check_site` for every row read by id: NOT_FOUND, as if it did not exist, unless its
  site is the caller's organisation's (and one of a site-limited caller's sites).
- :func:`in_scope` filters a query's site column to the caller's sites.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from services.common.errors import NotFound
from services.common.outbox import OutgoingEvent
from services.common.scope import Scope, current_scope
from services.inventory.store.models import StockSiteRow


def organisation_of(session: Session, site_id: str) -> str | None:
    """The organisation of the stock site; None when there is no such site."""
    row = session.get(StockSiteRow, site_id) if site_id else None
    return None if row is None else row.organisation_id


def check_site(session: Session, site_id: str, kind: str, key: str) -> None:
    """NOT_FOUND for ``kind`` ``key`` unless its site is in the caller's scope."""
    scope = current_scope()
    if scope.unrestricted:
        return
    if not scope.sees(organisation_of(session, site_id) or "", site_id):
        raise NotFound(kind, key)


def in_scope(site_column: Any, scope: Scope | None = None) -> ColumnElement[bool]:
    """WHERE clause: the row's site is one of the caller's (always true for services)."""
    scope = scope or current_scope()
    if scope.unrestricted:
        return scope.where()
    owned = select(StockSiteRow.id).where(StockSiteRow.organisation_id == scope.organisation_id)
    clause: ColumnElement[bool] = site_column.in_(owned) & scope.site_filter(site_column)
    return clause


def event_sites(event: OutgoingEvent) -> list[str]:
    """The sites an outbox event concerns (``site_id``, or a recall's ``sites``)."""
    payload = event.payload
    found = [str(payload["site_id"])] if payload.get("site_id") else []
    return found + [str(s) for s in payload.get("sites", []) if s]


def scoped_events(
    session: Session,
    read: Callable[[int], list[OutgoingEvent]],
    after: int,
    size: int,
) -> list[OutgoingEvent]:
    """Up to ``size`` outbox events after ``after`` that concern one of the caller's sites
    (every event for our services), reading ``read(after)`` batches until enough are found
    or the outbox ends: an event of another organisation is skipped, never shown."""
    scope = current_scope()
    if scope.unrestricted:
        return read(after)
    owners: dict[str, str] = {}

    def mine(event: OutgoingEvent) -> bool:
        for site_id in event_sites(event):
            if site_id not in owners:
                owners[site_id] = organisation_of(session, site_id) or ""
            if scope.sees(owners[site_id], site_id):
                return True
        return False

    found: list[OutgoingEvent] = []
    while len(found) < size:
        batch = read(after)
        if not batch:
            break
        found.extend(e for e in batch if mine(e))
        after = batch[-1].seq
    return found[:size]
