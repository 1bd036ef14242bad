"""Two guards of a mutation that writes its request_id's key last (``key_last``,
services/common/idempotency.py), on SQLite and PostgreSQL:

- a mutation run ``statementwise`` (autocommit on PostgreSQL) that wrote without holding its
  write back has nothing left for the key to ride in: its writes stand already, so a key
  written after them could be lost to a crash between the two. It is refused as a programming
  error, not answered as if keyed;
- a mutation that meets an Unavailable error (the database or a peer away) gets that error as
  it is: the lookup of a stored response that answers a repeat would need the same database.
  A DomainError of any other kind does look the key up (a repeat whose own attempt no longer
  holds answers the first result)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from infusion.inventory.v1 import inventory_pb2 as inv
from services.common.clock import FixedClock
from services.common.db import Database, defer_write
from services.common.errors import Aborted, Unavailable
from services.common.idempotency import IdempotencyStore
from services.common.identity import acting_as, service_caller
from services.common.migrations import upgrade
from services.inventory.store.models import idempotency_keys
from tests.integration.conftest import NOW

REQUEST = inv.AmendReservationRequest(request_id="req-1", reservation_id="r-1")
RESPONSE = inv.AmendReservationResponse


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The inventory's tables, the calls made as the inventory service (request ids are kept
    per organisation, so a caller must be set)."""
    db = Database(database_url)
    upgrade("inventory", db.engine)
    with acting_as(service_caller("inventory")):
        yield db
    db.engine.dispose()


def _keys(db: Database) -> int:
    with db.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(idempotency_keys)) or 0)


def _store(db: Database) -> IdempotencyStore:
    return IdempotencyStore(db, idempotency_keys, FixedClock(NOW))


def test_a_statementwise_mutation_that_held_nothing_back_is_refused(database: Database) -> None:
    def wrote_without_holding_back(session: Session) -> inv.AmendReservationResponse:
        return RESPONSE()

    def run() -> None:
        _store(database).run(
            "AmendReservation",
            REQUEST,
            RESPONSE,
            wrote_without_holding_back,
            key_last=True,
            statementwise=True,
        )

    if database.dialect != "postgresql":
        # SQLite has no statementwise session: the mutation runs in a transaction and its key
        # is written in it
        run()
        assert _keys(database) == 1
        return
    with pytest.raises(RuntimeError, match="without holding back"):
        run()
    assert _keys(database) == 0


def test_a_statementwise_mutation_that_held_its_write_back_carries_the_key(
    database: Database,
) -> None:
    """The counterpart: the same mutation holding a write back is keyed, and a repeat answers
    the first response without running the mutation again."""
    runs = []

    def held_back(session: Session) -> inv.AmendReservationResponse:
        runs.append(1)
        defer_write(session, lambda riders: [session.execute(s, p) for s, p in riders])
        return RESPONSE(reservation=inv.Reservation(id="r-1"))

    keys = _store(database)
    first = keys.run(
        "AmendReservation", REQUEST, RESPONSE, held_back, key_last=True, statementwise=True
    )
    assert _keys(database) == 1
    again = keys.run(
        "AmendReservation", REQUEST, RESPONSE, held_back, key_last=True, statementwise=True
    )
    assert again == first
    assert again.reservation.id == "r-1"


@pytest.mark.parametrize("statementwise", [False, True])
def test_unavailable_is_raised_without_a_lookup(
    database: Database, monkeypatch: pytest.MonkeyPatch, statementwise: bool
) -> None:
    keys = _store(database)
    lookups: list[str] = []
    real_lookup = keys._lookup

    def counted(method: str, *args: object) -> object:
        lookups.append(method)
        return real_lookup(method, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(keys, "_lookup", counted)

    def away(session: Session) -> inv.AmendReservationResponse:
        raise Unavailable("the notify service did not answer")

    with pytest.raises(Unavailable):
        keys.run(
            "AmendReservation", REQUEST, RESPONSE, away, key_last=True, statementwise=statementwise
        )
    assert lookups == []

    def no_longer_holds(session: Session) -> inv.AmendReservationResponse:
        raise Aborted("the lot was taken meanwhile")

    # any other DomainError is looked up (no first result here: the error stands)
    with pytest.raises(Aborted):
        keys.run(
            "AmendReservation",
            REQUEST,
            RESPONSE,
            no_longer_holds,
            key_last=True,
            statementwise=statementwise,
        )
    assert len(lookups) == 1
    assert _keys(database) == 0
