"""AmendReservation and DispenseReservation, set-based. An amend chooses its vials again from
one unlocked read with what the reservation holds counted as free, locks and checks the chosen
and held lots, and writes in one statement on PostgreSQL (with the audit record); a dispense
reads the lots it touches locked in one read, writes its ledger rows, then the rest in one
statement. Counted, checked against the ledger, and (the amend) raced.

Statements counted per thread, as in test_inventory_reserve_statements.py. After a first
amend (which loads the site), one amend without a request_id sends at most AMEND_STATEMENTS:

- PostgreSQL: the reservation's row locked, its site's organisation (the caller's scope),
  what it holds, the promisable lots, the lock of the chosen and held lots, and one statement
  of data-modifying WITH clauses (the reservation, the RELEASE and RESERVATION ledger rows,
  each lot's reserved count, the lines, the audit record and its queue row): 6.
- SQLite: BEGIN IMMEDIATE, the same five reads, then each write on its own: the reservation,
  the ledger rows, one UPDATE per lot whose hold changed, the lines changed and added, and
  the audit record's two INSERTs.

The way every amend went before, each candidate lot locked first and the rows written by the
ORM's flush, sends 15 statements on PostgreSQL and 17 on SQLite for the first amend below; an
amend now goes that way only when a chosen lot was taken between its read and its lock."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from sqlalchemy.orm import Session

from infusion.inventory.v1 import inventory_pb2 as inv
from services.common.audit.trail import AuditTrail
from services.inventory.store import reservations as store
from tests.integration.conftest import Platform, audited_ids, reserve, stock_site, write_apart
from tests.integration.test_inventory_reserve_statements import statements_by_thread

AMEND_STATEMENTS = {"sqlite": 13, "postgresql": 6}
SITE = "amended"


def _lots(p: Platform, *lots: tuple[str, int, int]) -> str:
    """Lots of 10 g vials at SITE, each (lot number, vials, day of June 2027 it expires);
    returns the product's id."""
    stock_site(p, SITE)
    product_id = p.inventory.GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product.id
    for number, vials, day in lots:
        p.inventory.ReceiveStock(
            inv.ReceiveStockRequest(
                site_id=SITE,
                product_id=product_id,
                presentation_grams="10",
                lot_number=number,
                expiry_date=Date(year=2027, month=6, day=day),
                vials=vials,
                unit_cost=Money(currency_code="GBP", units=340),  # docs/clinical-rules.md#cost
                request_id=f"received-{number}",
            )
        )
    return product_id


def _amend(p: Platform, r: inv.Reservation, grams: str) -> inv.Reservation:
    return p.inventory.AmendReservation(
        inv.AmendReservationRequest(reservation_id=r.id, grams=grams, etag=r.etag)
    ).reservation


def _held(r: inv.Reservation) -> list[tuple[str, int]]:
    return [(line.lot_number, line.vials) for line in r.lines]


def _reserved(p: Platform) -> dict[str, int]:
    lots = p.inventory.ListLots(inv.ListLotsRequest(site_id=SITE, page_size=100)).lots
    return {lot.lot_number: lot.reserved_vials for lot in lots}


def _ledger_matches(p: Platform) -> None:
    report = p.inventory.ReconcileStock(inv.ReconcileStockRequest(site_id=SITE))
    assert list(report.discrepancies) == []


def test_an_amend_sends_a_bounded_number_of_statements_and_answers_what_it_wrote(
    platform: Platform, database_url: str
) -> None:
    product_id = _lots(platform, ("C0", 10, 1), ("C1", 10, 2), ("C2", 10, 3))
    warm = reserve(platform, SITE, "warm-up", product_id, "10")
    warm = _amend(platform, warm, "20")  # loads what a first amend loads
    r = reserve(platform, SITE, "counted", product_id, "20")
    assert _held(r) == [("C0", 2)]
    with statements_by_thread() as counted:
        amended = _amend(platform, r, "120")
    # 12 vials, earliest expiry first (docs/clinical-rules.md#first-expiry-first-out): C0 has 10 - 2
    # (warm-up's) = 8 for it, the 2 it held counted as free; C1 gives the other 4
    assert _held(amended) == [("C0", 8), ("C1", 4)]
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    served = counted.of_thread_sending("UPDATE reservations")
    assert served <= AMEND_STATEMENTS[dialect], counted.sent
    assert _reserved(platform) == {"C0": 10, "C1": 4, "C2": 0}
    _ledger_matches(platform)
    # the answer is what was written
    stored = platform.inventory.GetReservation(inv.GetReservationRequest(id=r.id)).reservation
    assert _held(stored) == _held(amended)
    assert (stored.etag, stored.allocated_grams) == (amended.etag, amended.allocated_grams)
    assert amended.etag != r.etag
    assert audited_ids(database_url, "inventory", "AmendReservation").count(r.id) == 1
    # smaller again: C1's vials go back, C0 keeps what the dose needs
    smaller = _amend(platform, amended, "30")
    assert _held(smaller) == [("C0", 3)]
    assert _reserved(platform) == {"C0": 5, "C1": 0, "C2": 0}
    _ledger_matches(platform)


def test_an_amend_counts_what_the_reservation_holds_as_free(platform: Platform) -> None:
    """A holds 2 vials, all of it, and expires first. Amended from 20 g to 30 g, the
    reservation keeps A's 2 and adds 1 of B: counted as taken, A would have been passed
    over for 3 of B, against the earliest-expiry rule."""
    product_id = _lots(platform, ("A", 2, 1), ("B", 10, 2))
    r = reserve(platform, SITE, "held", product_id, "20")
    assert _held(r) == [("A", 2)]
    amended = _amend(platform, r, "30")
    assert _held(amended) == [("A", 2), ("B", 1)]
    assert _reserved(platform) == {"A": 2, "B": 1}
    _ledger_matches(platform)


def test_an_amend_short_of_stock_changes_nothing(platform: Platform) -> None:
    product_id = _lots(platform, ("S0", 3, 1))
    r = reserve(platform, SITE, "short", product_id, "20")
    with pytest.raises(grpc.RpcError) as refused:
        _amend(platform, r, "40")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stored = platform.inventory.GetReservation(inv.GetReservationRequest(id=r.id)).reservation
    assert (_held(stored), stored.etag) == ([("S0", 2)], r.etag)
    assert _reserved(platform) == {"S0": 2}
    _ledger_matches(platform)


def test_an_amend_whose_lot_is_taken_meanwhile_locks_and_chooses_again(
    platform: Platform, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction takes R0's free vials between the amend's unlocked read and its
    lock: the check after the lock finds them gone, and the amend chooses again with every
    candidate lot locked, in the same transaction. PostgreSQL only (SQLite's write lock
    leaves no gap)."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock leaves no gap between the read and the lock")
    product_id = _lots(platform, ("R0", 10, 1), ("R1", 10, 2))
    r = reserve(platform, SITE, "raced", product_id, "20")
    read = store.promisable

    def read_then_lose_r0(session: Session, *args: Any, **kw: Any) -> list[store.Promisable]:
        seen = read(session, *args, **kw)
        write_apart(  # R0's 8 free vials, taken (the amend's 2 stay its own)
            database_url,
            "UPDATE lots SET reserved_vials = on_hand_vials "
            "WHERE site_id = :site AND lot_number = 'R0'",
            site=SITE,
        )
        return seen

    monkeypatch.setattr(store, "promisable", read_then_lose_r0)
    amended = _amend(platform, r, "40")
    # the read saw 10 vials of R0 for it and chose R0 × 4; locked, R0 had only its own 2
    assert _held(amended) == [("R0", 2), ("R1", 2)]
    assert _reserved(platform) == {"R0": 10, "R1": 2}
    stored = platform.inventory.GetReservation(inv.GetReservationRequest(id=r.id)).reservation
    assert _held(stored) == _held(amended)
    assert audited_ids(database_url, "inventory", "AmendReservation") == [r.id]


def test_an_amend_without_a_request_id_is_recorded_in_its_own_transaction(
    platform: Platform, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The amend writes by statement, not by the ORM's flush: its record is still written in
    its transaction at the commit, not after it in a transaction of its own (which a crash in
    between would lose)."""
    product_id = _lots(platform, ("T0", 10, 1))
    r = reserve(platform, SITE, "recorded", product_id, "20")
    after: list[str] = []
    store_now = AuditTrail.store_now

    def spy(self: AuditTrail, record: Any, expected: bool = False) -> None:
        after.append(record.method)
        store_now(self, record, expected)

    monkeypatch.setattr(AuditTrail, "store_now", spy)
    _amend(platform, r, "30")
    assert not [m for m in after if m.endswith("AmendReservation")]
    assert audited_ids(database_url, "inventory", "AmendReservation") == [r.id]


DISPENSE_STATEMENTS = {"sqlite": 13, "postgresql": 5}
"""After a first dispense, one of two lots (one opened in part, one held and not opened)
sends at most this many statements. PostgreSQL: the reservation's row locked, its site's
organisation, the lots held or named (locked, in one read), the ledger rows (their places in
the ledger come back with them), and one statement of data-modifying WITH clauses (each
lot's counts and state, the administration trace, the lines cleared, the reservation, the
audit record). SQLite: BEGIN IMMEDIATE, the same four, then each write on its own. The way
every dispense went before, the rows written by the ORM's flush and read back for the
answer, sent 14 on PostgreSQL and 18 on SQLite."""


def _dispense(p: Platform, r: inv.Reservation, lot_id: str, given: str, wasted: str) -> Any:
    return p.inventory.DispenseReservation(
        inv.DispenseReservationRequest(
            reservation_id=r.id,
            vials=[inv.DispensedVials(lot_id=lot_id, vials=1)],
            grams_administered=given,
            grams_wasted=wasted,
        )
    )


def test_a_dispense_sends_a_bounded_number_of_statements_and_answers_what_it_wrote(
    platform: Platform, database_url: str
) -> None:
    product_id = _lots(platform, ("D0", 1, 1), ("D1", 10, 2))
    first = reserve(platform, SITE, "first", product_id, "10")
    _dispense(platform, first, first.lines[0].lot_id, "10", "0")  # D0 now empty: DEPLETED
    r = reserve(platform, SITE, "counted", product_id, "20")
    assert _held(r) == [("D1", 2)]
    with statements_by_thread() as counted:
        done = _dispense(platform, r, r.lines[0].lot_id, "8", "2")  # one vial opened
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    served = counted.of_thread_sending("INSERT INTO stock_movements")
    assert served <= DISPENSE_STATEMENTS[dialect], counted.sent
    # 1 vial given (8 g) and wasted (2 g), the other held vial back on the shelf
    assert [(m.kind, m.on_hand_delta_vials, m.reserved_delta_vials) for m in done.movements] == [
        (inv.MOVEMENT_KIND_DISPENSE, -1, -1),
        (inv.MOVEMENT_KIND_WASTE, 0, 0),
        (inv.MOVEMENT_KIND_RELEASE, 0, -1),
    ]
    assert [(a.lot_number, a.vials, a.grams_administered) for a in done.administrations] == [
        ("D1", 1, "8")
    ]
    stored = platform.inventory.GetReservation(inv.GetReservationRequest(id=r.id)).reservation
    assert (stored.state, stored.etag, list(stored.lines)) == (
        done.reservation.state,
        done.reservation.etag,
        [],
    )
    assert stored.state == inv.RESERVATION_STATE_DISPENSED
    lots = {
        lot.lot_number: lot
        for lot in platform.inventory.ListLots(inv.ListLotsRequest(site_id=SITE)).lots
    }
    assert (lots["D1"].on_hand_vials, lots["D1"].reserved_vials) == (9, 0)
    assert lots["D0"].state == inv.LOT_STATE_DEPLETED
    _ledger_matches(platform)
    assert audited_ids(database_url, "inventory", "DispenseReservation").count(r.id) == 1
