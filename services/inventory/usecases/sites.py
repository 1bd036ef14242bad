"""Stock sites and storage units. Sites are few and never deleted, so they are cached once
read: every stock call asks for its site's "today"."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.clock import Clock
from services.common.db import Database
from services.common.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from services.common.ids import new_id
from services.common.pagination import PageRequest
from services.common.scope import current_scope
from services.inventory.domain.sites import StockSite, StorageUnit, validate_site
from services.inventory.store.models import StockSiteRow, StorageUnitRow
from services.inventory.store.site_scope import in_scope


def _site(row: StockSiteRow) -> StockSite:
    hour, minute = (int(x) for x in row.expiry_check_time.split(":"))
    return StockSite(
        id=row.id,
        display_name=row.display_name,
        time_zone=row.time_zone,
        expiry_check_time=dt.time(hour, minute),
        expiry_warning_days=tuple(row.expiry_warning_days),
        organisation_id=row.organisation_id,
    )


def _unit(row: StorageUnitRow) -> StorageUnit:
    return StorageUnit(row.id, row.site_id, row.display_name, row.storage)


class Sites:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._cache: dict[str, StockSite] = {}
        self._lock = threading.Lock()

    def create(self, session: Session, site: StockSite) -> tuple[StockSite, dt.datetime]:
        validate_site(site).raise_if_any()
        scope = current_scope()
        scope.require_site(site.id, "site.id")
        site = dataclasses.replace(
            site,
            expiry_warning_days=tuple(sorted(site.expiry_warning_days, reverse=True)),
            organisation_id=scope.organisation_for(site.organisation_id, "site.organisation_id"),
        )
        if session.get(StockSiteRow, site.id) is not None:
            raise AlreadyExists("stock site", site.id)
        now = self.clock.now()
        session.add(
            StockSiteRow(
                id=site.id,
                organisation_id=site.organisation_id,
                display_name=site.display_name,
                time_zone=site.time_zone,
                expiry_check_time=site.expiry_check_time.strftime("%H:%M"),
                expiry_warning_days=list(site.expiry_warning_days),
                revision=1,
                created_at=now,
            )
        )
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError as error:
            raise AlreadyExists("stock site", site.id) from error
        return site, now

    def get(self, site_id: str, session: Session | None = None) -> StockSite:
        """The stock site; NOT_FOUND when there is none or it is out of the caller's scope
        (so every use of a site, as a target or a field, reads another organisation's site as
        missing)."""
        site = self._get(site_id, session)
        if not current_scope().sees(site.organisation_id, site.id):
            raise NotFound("stock site", site_id)
        return site

    def _get(self, site_id: str, session: Session | None) -> StockSite:
        with self._lock:
            cached = self._cache.get(site_id)
        if cached is not None:
            return cached
        if session is not None:
            row = session.get(StockSiteRow, site_id) if site_id else None
        else:
            with self.db.read() as s:
                row = s.get(StockSiteRow, site_id) if site_id else None
        if row is None:
            raise NotFound("stock site", site_id)
        site = _site(row)
        with self._lock:
            self._cache[site_id] = site
        return site

    def created_at(self, site_id: str) -> dt.datetime:
        with self.db.read() as s:
            row = s.get(StockSiteRow, site_id)
            if row is None:
                raise NotFound("stock site", site_id)
            return row.created_at

    def list_sites(self, page: PageRequest) -> list[tuple[StockSite, dt.datetime]]:
        with self.db.read() as s:
            query = select(StockSiteRow).where(in_scope(StockSiteRow.id))
            if page.after:
                query = query.where(StockSiteRow.id > page.after[0])
            rows = s.scalars(query.order_by(StockSiteRow.id).limit(page.size + 1))
            return [(_site(r), r.created_at) for r in rows]

    def today(self, site_id: str, session: Session | None = None) -> dt.date:
        """The site's local calendar day now."""
        return self.get(site_id, session).local_date(self.clock.now())

    def known(self, session: Session, site_id: str, field: str) -> StockSite:
        """A site named in a request: unknown is the caller's mistake in that field."""
        try:
            return self.get(site_id, session)
        except NotFound as missing:
            raise InvalidArgument(
                [FieldViolation(field, f"no stock site {site_id!r}: create it first")]
            ) from missing

    def create_unit(self, session: Session, unit: StorageUnit) -> tuple[StorageUnit, dt.datetime]:
        problems = []
        if not unit.display_name.strip():
            problems.append(FieldViolation("storage_unit.display_name", "is required"))
        if not unit.storage:
            problems.append(FieldViolation("storage_unit.storage", "is required"))
        if problems:
            raise InvalidArgument(problems)
        self.known(session, unit.site_id, "storage_unit.site_id")
        now = self.clock.now()
        row = StorageUnitRow(
            id=new_id(),
            site_id=unit.site_id,
            display_name=unit.display_name,
            storage=unit.storage,
            created_at=now,
        )
        session.add(row)
        session.flush()
        return _unit(row), now

    def unit(self, session: Session, unit_id: str, site_id: str, field: str) -> StorageUnit:
        row = session.get(StorageUnitRow, unit_id) if unit_id else None
        if row is None or row.site_id != site_id:
            raise InvalidArgument(
                [FieldViolation(field, f"no storage unit {unit_id!r} at site {site_id}")]
            )
        return _unit(row)

    def units(self, site_id: str) -> list[tuple[StorageUnit, dt.datetime]]:
        with self.db.read() as s:
            self.get(site_id, s)
            rows = s.scalars(
                select(StorageUnitRow)
                .where(StorageUnitRow.site_id == site_id)
                .order_by(StorageUnitRow.display_name, StorageUnitRow.id)
            )
            return [(_unit(r), r.created_at) for r in rows]
