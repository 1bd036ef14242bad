"""What a caller may see and change: its organisation and, within it, its sites.

Every resource belongs to an organisation and, where it has one, to a site
(docs/security.md, "Scope"). Permissions (services.common.auth) say which calls a caller may
make; the scope says on which rows. A store reads the running call's scope with
:func:`current_scope` and

- filters every list by it (:meth:`Scope.where`), so a list never holds another
  organisation's rows;
- checks every row it reads by id (:meth:`Scope.check`), turning a row out of scope into
  NOT_FOUND exactly as if it did not exist, so ids of other organisations leak nothing;
- stamps what a caller creates with :meth:`Scope.organisation_for` (a person's or hospital
  system's own organisation; a service names the organisation it acts for).

Our own services (``kind == "service"``) carry no organisation and act for any: their jobs,
relays and peer calls see every row, and name the organisation where they create one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, false, true

from services.common.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from services.common.identity import Caller, current_caller


@dataclass(frozen=True)
class Scope:
    # None: every organisation (our own services only)
    organisation_id: str | None
    # None: every site of the organisation; a set: only these
    site_ids: frozenset[str] | None

    @classmethod
    def of(cls, caller: Caller) -> Scope:
        if caller.kind == "service":
            return cls(None, None)
        # a person or hospital system always has an organisation (the verifier requires the
        # claim); an empty one would see nothing rather than everything
        return cls(caller.organisation_id or "", caller.site_ids)

    @property
    def unrestricted(self) -> bool:
        return self.organisation_id is None

    def sees_site(self, site_id: str) -> bool:
        return self.site_ids is None or site_id in self.site_ids

    def sees(self, organisation_id: str, site_id: str | None = None) -> bool:
        """Whether a row of ``organisation_id`` (at ``site_id``, when it has a site) is in
        scope."""
        if self.organisation_id is None:
            return True
        if organisation_id != self.organisation_id or not self.organisation_id:
            return False
        return site_id is None or self.sees_site(site_id)

    def check(self, kind: str, key: str, organisation_id: str, site_id: str | None = None) -> None:
        """NOT_FOUND, worded as for a missing row, unless the row is in scope."""
        if not self.sees(organisation_id, site_id):
            raise NotFound(kind, key)

    def where(
        self, organisation: Any | None = None, site: Any | None = None
    ) -> ColumnElement[bool]:
        """A WHERE clause keeping the rows in scope: ``organisation`` is the row's
        organisation column, ``site`` its site column when it has one. (Rows that reach their
        organisation through their site combine :meth:`site_filter` with a subquery of the
        organisation's sites in their store.)"""
        clauses: list[ColumnElement[bool]] = []
        if self.organisation_id is not None:
            if not self.organisation_id:
                return false()
            if organisation is not None:
                clauses.append(organisation == self.organisation_id)
            if site is not None and self.site_ids is not None:
                clauses.append(site.in_(sorted(self.site_ids)) if self.site_ids else false())
        if not clauses:
            return true()
        result = clauses[0]
        for clause in clauses[1:]:
            result = result & clause
        return result

    def site_filter(self, site: Any) -> ColumnElement[bool]:
        """Only the caller's sites (no organisation check: combine with one)."""
        if self.organisation_id is None or self.site_ids is None:
            return true()
        return site.in_(sorted(self.site_ids)) if self.site_ids else false()

    def organisation_for(self, requested: str, field: str) -> str:
        """The organisation a new resource belongs to. A person or hospital system creates in
        its own organisation (``requested`` empty or the same); naming another is
        PERMISSION_DENIED: there is nothing to hide, the caller named it. A service must name
        one (INVALID_ARGUMENT when it does not)."""
        if self.organisation_id is None:
            if not requested:
                raise InvalidArgument(
                    [FieldViolation(field, "a service must name the organisation it acts for")]
                )
            return requested
        if requested and requested != self.organisation_id:
            raise PermissionDenied(
                f"{field}: the caller acts for its own organisation only, not {requested!r}"
            )
        return self.organisation_id

    def require_all_sites(self, what: str) -> None:
        """PERMISSION_DENIED for a caller limited to some sites: ``what`` (creating a site,
        say) needs the whole organisation."""
        if self.organisation_id is not None and self.site_ids is not None:
            raise PermissionDenied(f"{what} needs access to every site of the organisation")

    def require_site(self, site_id: str, field: str) -> None:
        """PERMISSION_DENIED when a site-limited caller names a new site id outside its sites
        (for existing sites use :meth:`check`, which says NOT_FOUND)."""
        if self.organisation_id is not None and not self.sees_site(site_id):
            raise PermissionDenied(f"{field}: the caller does not act for site {site_id!r}")

    def sees_any_site(self, site_ids: Collection[str]) -> bool:
        """For a row that concerns several sites (a notification): in scope when it concerns
        none (organisation-wide) or one of the caller's."""
        return self.site_ids is None or not site_ids or any(s in self.site_ids for s in site_ids)


def current_scope() -> Scope:
    """The scope of the running call or job (services: unrestricted)."""
    return Scope.of(current_caller())
