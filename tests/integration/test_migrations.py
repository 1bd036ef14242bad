"""Each service's Alembic history builds exactly the schema its models declare, on both
databases, and applying it twice is harmless (start-up runs it every time)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
from decimal import Decimal

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, bindparam, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from services.common.db import Database
from services.common.migrations import alembic_config, upgrade
from services.scheduler.domain.plans import Induction
from services.scheduler.store.codec import plan_to_spec
from services.scheduler.store.due_inputs import encode
from services.scheduler.store.models import PatientRow, PlanRow, PlanVersionRow, SiteRow
from tests.unit.builders import plan as unit_plan


@pytest.mark.parametrize("service", ["scheduler", "inventory", "notify"])
def test_migrations_match_models_and_are_idempotent(database_url: str, service: str) -> None:
    db = Database(database_url)
    try:
        upgrade(service, db.engine)
        upgrade(service, db.engine)
        models = importlib.import_module(f"services.{service}.store.models")
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": f"alembic_version_{service}"}
            )
            assert compare_metadata(ctx, models.Base.metadata) == []
        assert f"alembic_version_{service}" in inspect(db.engine).get_table_names()
    finally:
        db.dispose()


def _migrate(db: Database, service: str, revision: str, down: bool = False) -> None:
    cfg = alembic_config(service, db.engine)
    with db.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, revision)


@pytest.mark.parametrize(("service", "before"), [("inventory", "0006"), ("notify", "0004")])
def test_the_scope_migrations_reverse_and_give_old_rows_the_legacy_organisation(
    database_url: str, service: str, before: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inventory 0007 and notify 0005 (docs/security.md, "Scope"): down and up again, and the
    rows that were there before become LEGACY_ORGANISATION_ID's (docs/operations.md)."""
    db = Database(database_url)
    try:
        _migrate(db, service, "head")
        _migrate(db, service, before, down=True)
        table = "stock_sites" if service == "inventory" else "notify_subscribers"
        assert "organisation_id" not in {c["name"] for c in inspect(db.engine).get_columns(table)}
        now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        with db.engine.begin() as connection:
            if service == "inventory":
                connection.execute(
                    text(
                        "INSERT INTO stock_sites (id, display_name, time_zone, expiry_check_time,"
                        " expiry_warning_days, revision, created_at)"
                        " VALUES ('old-site', 'Old', 'UTC', '06:00', '[90]', 1, :now)"
                    ),
                    {"now": now},
                )
            else:
                connection.execute(
                    text(
                        "INSERT INTO notify_subscribers (id, external_ref, display_name,"
                        " time_zone, email, phone, webhook_url, webhook_secret, preferences,"
                        " site_ids, kind, revision, created_at, updated_at) VALUES ('old-site',"
                        " 'r', 'Old', 'UTC', 'a@example.org', '', '', '', '[]', '[]', 'STAFF',"
                        " 1, :now, :now)"
                    ),
                    {"now": now},
                )
        monkeypatch.setenv("LEGACY_ORGANISATION_ID", "org-old")
        _migrate(db, service, "head")
        with db.engine.connect() as connection:
            owner = connection.scalar(
                text(f"SELECT organisation_id FROM {table} WHERE id = 'old-site'")
            )
        assert owner == "org-old"
    finally:
        db.dispose()


def test_notify_0008_ties_one_subscriber_per_user_and_organisation_and_reverses(
    database_url: str,
) -> None:
    """Notify 0008 (a user's own subscriber): existing subscribers get no user (NULL, and NULLs
    never collide); one organisation's user has one subscriber; down and up again."""
    db = Database(database_url)
    insert = text(
        "INSERT INTO notify_subscribers (id, external_ref, display_name, time_zone, email, phone,"
        " webhook_url, webhook_secret, preferences, site_ids, kind, organisation_id, revision,"
        " created_at, updated_at) VALUES (:id, 'r', 'N', 'UTC', '', '', '', '', '[]', '[]',"
        " 'STAFF', :org, 1, :now, :now)"
    )
    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    try:
        _migrate(db, "notify", "0007")
        with db.engine.begin() as connection:
            for sid in ("s1", "s2"):
                connection.execute(insert, {"id": sid, "org": "org-1", "now": now})
        _migrate(db, "notify", "head")
        with db.engine.begin() as connection:
            users = connection.scalars(text("SELECT user_subject FROM notify_subscribers"))
            assert list(users) == [None, None]
            connection.execute(
                text("UPDATE notify_subscribers SET user_subject = 'u' WHERE id = 's1'")
            )
            connection.execute(insert, {"id": "s3", "org": "org-2", "now": now})
            connection.execute(
                text("UPDATE notify_subscribers SET user_subject = 'u' WHERE id = 's3'")
            )
        with pytest.raises(IntegrityError), db.engine.begin() as connection:
            connection.execute(
                text("UPDATE notify_subscribers SET user_subject = 'u' WHERE id = 's2'")
            )
        _migrate(db, "notify", "0007", down=True)
        columns = {c["name"] for c in inspect(db.engine).get_columns("notify_subscribers")}
        assert "user_subject" not in columns
        _migrate(db, "notify", "head")
    finally:
        db.dispose()


def test_scheduler_0013_fills_in_the_due_inputs_of_existing_plan_versions_and_reverses(
    database_url: str,
) -> None:
    """Scheduler 0013 (``therapy_plan_versions.due_inputs``, the due scan's reading,
    services/scheduler/store/due_inputs.py): versions written before it get the inputs of
    their specs; down drops the column, and up again fills it in again."""
    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    stamp = {"revision": 1, "created_at": now, "updated_at": now}
    plan = unit_plan()
    specs = [
        plan_to_spec(plan),
        plan_to_spec(
            dataclasses.replace(
                plan, induction=Induction(Decimal(2), 5), last_infusion_date=dt.date(2026, 11, 1)
            )
        ),
    ]
    db = Database(database_url)
    try:
        _migrate(db, "scheduler", "head")
        with db.engine.begin() as connection:
            connection.execute(
                insert(SiteRow),
                [
                    {
                        "id": "site-1",
                        "organisation_id": "org-1",
                        "display_name": "Unit",
                        "time_zone": "Europe/London",
                        "opening_hours": [],
                        "closure_dates": [],
                        "capacity": {},
                        **stamp,
                    }
                ],
            )
            connection.execute(
                insert(PatientRow),
                [
                    {
                        "id": "patient-1",
                        "organisation_id": "org-1",
                        "mrn": "M1",
                        "given_name": "Ada",
                        "family_name": "L",
                        "birth_date": dt.date(1970, 1, 1),
                        "sex_at_birth": "FEMALE",
                        "notify_subscriber_id": "",
                        **stamp,
                    }
                ],
            )
            connection.execute(
                insert(PlanRow),
                [
                    {
                        "id": "plan-1",
                        "patient_id": "patient-1",
                        "site_id": "site-1",
                        "status": "ACTIVE",
                        "current_version": 2,
                        **stamp,
                    }
                ],
            )
        _migrate(db, "scheduler", "0012", down=True)
        columns = {c["name"] for c in inspect(db.engine).get_columns("therapy_plan_versions")}
        assert "due_inputs" not in columns
        with db.engine.begin() as connection:  # written as before 0013: no due inputs
            connection.execute(
                text(
                    "INSERT INTO therapy_plan_versions (plan_id, version, spec, reason,"
                    " created_at) VALUES ('plan-1', :version, :spec, '', :now)"
                ).bindparams(bindparam("spec", type_=JSON)),
                [{"version": v + 1, "spec": spec, "now": now} for v, spec in enumerate(specs)],
            )
        for _ in range(2):
            _migrate(db, "scheduler", "head")
            with db.engine.connect() as connection:
                stored = connection.execute(
                    select(PlanVersionRow.version, PlanVersionRow.due_inputs).order_by(
                        PlanVersionRow.version
                    )
                ).all()
            assert stored == [(v + 1, encode(spec)) for v, spec in enumerate(specs)]
            _migrate(db, "scheduler", "0012", down=True)
        _migrate(db, "scheduler", "head")
    finally:
        db.dispose()
