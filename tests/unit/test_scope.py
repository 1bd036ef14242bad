"""services/common/scope.py: what a caller sees, what it may create, and the SQL it filters
with (docs/security.md, "Scope")."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

from services.common.errors import InvalidArgument, NotFound, PermissionDenied
from services.common.identity import Caller, acting_as, service_caller
from services.common.scope import Scope, current_scope


def person(org: str = "org-a", sites: frozenset[str] | None = None) -> Caller:
    return Caller("u", "user", org, sites, frozenset(), frozenset())


def test_a_service_sees_every_organisation_and_must_name_one_to_create() -> None:
    with acting_as(service_caller("scheduler")):
        scope = current_scope()
    assert scope.unrestricted and scope.sees("any", "site") and scope.sees("")
    assert scope.organisation_for("org-b", "f") == "org-b"
    with pytest.raises(InvalidArgument):
        scope.organisation_for("", "f")


def test_a_person_sees_its_organisation_and_its_sites() -> None:
    everywhere = Scope.of(person())
    assert everywhere.sees("org-a") and everywhere.sees("org-a", "s-2")
    assert not everywhere.sees("org-b") and not everywhere.sees("")
    limited = Scope.of(person(sites=frozenset({"s-1"})))
    assert limited.sees("org-a", "s-1") and not limited.sees("org-a", "s-2")
    assert limited.sees("org-a")  # organisation-wide rows (patients)
    assert limited.sees_any_site([]) and limited.sees_any_site(["s-2", "s-1"])
    assert not limited.sees_any_site(["s-2"])
    with pytest.raises(NotFound) as missing:
        limited.check("site", "s-2", "org-a", "s-2")
    assert str(missing.value) == "site 's-2' not found"  # worded as for a missing row


def test_a_person_creates_in_its_own_organisation_only() -> None:
    scope = Scope.of(person())
    assert scope.organisation_for("", "f") == "org-a"
    assert scope.organisation_for("org-a", "f") == "org-a"
    with pytest.raises(PermissionDenied) as denied:
        scope.organisation_for("org-b", "site.organisation_id")
    assert denied.value.reason == "OUT_OF_SCOPE"
    Scope.of(person()).require_all_sites("creating a site")
    with pytest.raises(PermissionDenied):
        Scope.of(person(sites=frozenset({"s-1"}))).require_all_sites("creating a site")
    with pytest.raises(PermissionDenied):
        Scope.of(person(sites=frozenset({"s-1"}))).require_site("s-2", "site.id")


def test_where_filters_rows_in_sql() -> None:
    table = Table("rows", MetaData(), Column("org", String), Column("site", String))
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(table),
            [
                {"org": "org-a", "site": "s-1"},
                {"org": "org-a", "site": "s-2"},
                {"org": "org-b", "site": "s-3"},
            ],
        )

        def visible(scope: Scope) -> list[str]:
            query = select(table.c.site).where(scope.where(table.c.org, table.c.site))
            return sorted(connection.scalars(query))

        assert visible(Scope(None, None)) == ["s-1", "s-2", "s-3"]
        assert visible(Scope.of(person())) == ["s-1", "s-2"]
        assert visible(Scope.of(person(sites=frozenset({"s-2"})))) == ["s-2"]
        assert visible(Scope.of(person(sites=frozenset()))) == []
        assert visible(Scope("", None)) == []  # no organisation sees nothing
