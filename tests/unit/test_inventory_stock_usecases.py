"""The stock use cases that change a lot's state or count (quarantine, release, count), run
against in-memory fakes of the lot store and of the sites: no gRPC and no database, in the
manner of a fake unit of work. What they show: the use case loads the lot, lets it decide,
and stores exactly what it decided, or nothing when it refuses."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from services.common.clock import FixedClock
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.inventory.domain.stock import (
    Actor,
    Balance,
    Entry,
    Lot,
    LotState,
    Movement,
    MovementKind,
)
from services.inventory.usecases.stock import Stock
from tests.unit.inventory_builders import lot

NOW = dt.datetime(2026, 11, 24, 23, 30, tzinfo=dt.UTC)
SITE_TODAY = dt.date(2026, 11, 25)  # the site is ahead of UTC: its day has already turned
ACTOR = Actor("pharmacist", "cold chain check", "req-1")


class FakeLots:
    """The lot store of one transaction, in memory; ``ledger`` is what was appended."""

    def __init__(self, *lots: Lot) -> None:
        self.lots = {lot.id: lot for lot in lots}
        self.ledger: list[Movement] = []

    def get(self, lot_id: str) -> Lot:
        if lot_id not in self.lots:
            raise NotFound("lot", lot_id)
        return dataclasses.replace(self.lots[lot_id])  # a copy, as a fresh load would be

    def record(
        self, lot: Lot, entry: Entry, now: dt.datetime, actor: Actor
    ) -> tuple[Lot, Movement]:
        kept = self.lots[lot.id]
        # the state and revision the lot reached (it counts a revision per change of state)
        stored = dataclasses.replace(lot, balance=kept.balance.plus(entry.on_hand, entry.reserved))
        stored.settle()
        self.lots[lot.id] = stored
        movement = Movement(
            f"m-{len(self.ledger) + 1}",
            lot.id,
            lot.site_id,
            entry.kind,
            entry.on_hand,
            entry.reserved,
            lot.unit_cost,
            lot.currency,
            entry.code,
            actor.reason,
            actor.name,
            actor.request_id,
            now,
            len(self.ledger) + 1,
        )
        self.ledger.append(movement)
        return stored, movement


class FakeSites:
    def today(self, site_id: str) -> dt.date:
        return SITE_TODAY


def stock(lots: FakeLots) -> Stock:
    return Stock(
        db=None,  # type: ignore[arg-type]  # these use cases run in the caller's transaction
        clock=FixedClock(NOW),
        catalogue=None,  # type: ignore[arg-type]
        sites=FakeSites(),  # type: ignore[arg-type]
        lots=lambda session: lots,
    )


SESSION: Any = None  # the fakes need no transaction


def test_quarantining_stores_the_state_and_one_vial_less_movement() -> None:
    lots = FakeLots(lot(balance=Balance(6, 2)))
    done = stock(lots).quarantine(SESSION, "lot-a", ACTOR)
    assert (done.state, done.revision, done.balance) == (LotState.QUARANTINED, 2, Balance(6, 2))
    [movement] = lots.ledger
    assert (movement.kind, movement.reason_code, movement.on_hand_delta) == (
        MovementKind.QUARANTINE,
        "QUARANTINED",
        0,
    )
    assert (movement.actor, movement.note, movement.request_id) == (
        "pharmacist",
        "cold chain check",
        "req-1",
    )


def test_a_refused_quarantine_stores_nothing() -> None:
    lots = FakeLots(lot(state=LotState.RECALLED))
    with pytest.raises(FailedPrecondition):
        stock(lots).quarantine(SESSION, "lot-a", ACTOR)
    assert lots.ledger == [] and lots.lots["lot-a"].state is LotState.RECALLED


def test_an_unknown_lot_is_not_found() -> None:
    with pytest.raises(NotFound):
        stock(FakeLots()).quarantine(SESSION, "nope", ACTOR)


def test_release_judges_the_expiry_on_the_sites_own_day() -> None:
    # expired by the site's calendar (25 November) though it is still 24 November in UTC
    lots = FakeLots(lot(state=LotState.QUARANTINED, expiry_date=dt.date(2026, 11, 24)))
    with pytest.raises(FailedPrecondition) as refused:
        stock(lots).release(SESSION, "lot-a", ACTOR)
    assert refused.value.violations[0].type == "LOT_IN_DATE"
    assert lots.ledger == []


def test_release_puts_a_quarantined_lot_back_in_use() -> None:
    lots = FakeLots(lot(state=LotState.QUARANTINED))
    assert stock(lots).release(SESSION, "lot-a", ACTOR).state is LotState.AVAILABLE
    assert [m.kind for m in lots.ledger] == [MovementKind.RELEASE_FROM_QUARANTINE]


def test_a_count_books_the_difference_and_an_empty_lot_is_depleted() -> None:
    lots = FakeLots(lot(balance=Balance(6, 0)))
    done, movement = stock(lots).record_count(SESSION, "lot-a", 0, ACTOR)
    assert movement is not None and movement.on_hand_delta == -6
    assert (done.state, done.balance) == (LotState.DEPLETED, Balance(0, 0))


def test_a_count_that_matches_books_nothing() -> None:
    lots = FakeLots(lot(balance=Balance(6, 2)))
    done, movement = stock(lots).record_count(SESSION, "lot-a", 6, ACTOR)
    assert movement is None and lots.ledger == [] and done.balance == Balance(6, 2)


def test_a_negative_count_is_refused_before_the_lot_is_looked_up() -> None:
    with pytest.raises(InvalidArgument):
        stock(FakeLots()).record_count(SESSION, "nope", -1, ACTOR)
