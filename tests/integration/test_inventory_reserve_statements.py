"""ReserveStock's cost: how many statements one reservation sends, and that the bounded read
of promisable lots chooses exactly what an allocation over every lot would.

The statements are counted with SQLAlchemy's ``before_cursor_execute`` event in the thread that
served the call (the one that sent the reservation's INSERT: the audit linker may run in
another meanwhile). After the first call (which loads the site and the catalogue) one
reservation sends at most RESERVE_STATEMENTS:

- PostgreSQL: the SELECT of promisable lots and one statement of data-modifying WITH clauses
  (the reservation, its lines, their ledger rows, the conditional UPDATE of the lot, the audit
  record and its queue row): 2, and 2 round trips. The connection is in autocommit
  (``Database.statementwise``): the driver sends no BEGIN and no COMMIT, and the joint write
  fails as a whole when a lot no longer has the vials. Until 2026-12-05 the call made four
  round trips (the driver's BEGIN and COMMIT around the two statements; five with the pool's
  pre-ping it sent until 2026-12-04), and the lot's row lock was held until the commit.
- SQLite: BEGIN IMMEDIATE, the SELECT of promisable lots, the INSERTs of the
  reservation, its lines and their ledger rows, one conditional UPDATE of the lot taken, and
  the audit record's two INSERTs (the record and its place in the linker's queue, written by
  the write session's before_commit hook): 8.

Before the set-based path one reservation sent 9 statements on SQLite and on PostgreSQL held
the chosen lot's row lock from its second statement (a SELECT ... FOR UPDATE) to the commit;
then it sent 6 statements on PostgreSQL, the lock held for the last three and the commit.

The catalogue's once-a-second check for changes (a SELECT on products) may fall in any call
and is left out of the count."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from google.type.date_pb2 import Date
from google.type.money_pb2 import Money
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

from infusion.inventory.v1 import inventory_pb2 as inv
from services.inventory.domain.allocation import Candidate, allocate
from services.inventory.store import reservations as store
from services.inventory.store.models import Base, LotRow, ProductRow
from tests.conftest import fresh_schema
from tests.integration.conftest import (
    NOW,
    Platform,
    audited_ids,
    reserve,
    stock_site,
    write_apart,
)
from tests.integration.round_trips import RoundTrips, round_trips_by_thread

RESERVE_STATEMENTS = {"sqlite": 8, "postgresql": 2}
"""At most this many statements per reservation."""
RESERVE_ROUND_TRIPS = 2
"""At most this many round trips per reservation on PostgreSQL."""


@contextmanager
def statements_by_thread() -> Iterator[RoundTrips]:
    """Statements sent to any engine while the block runs, counted per thread."""
    counted = RoundTrips()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM products" not in statement:
            counted[threading.get_ident()] += 1
            counted.sent.setdefault(threading.get_ident(), []).append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield counted
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def _reserve(p: Platform, appointment: str, product_id: str) -> inv.Reservation:
    return reserve(p, "counted", appointment, product_id, "20")


def _stock_lots(p: Platform, prefix: str, count: int) -> str:
    """Stocks site "counted" with `count` lots of 10 ten-gram vials, named prefix0, prefix1, …
    and expiring a day apart in that order; returns the product's id."""
    stock_site(p, "counted")
    product_id = p.inventory.GetProduct(inv.GetProductRequest(id="gammagard-liquid")).product.id
    for i in range(count):
        p.inventory.ReceiveStock(
            inv.ReceiveStockRequest(
                site_id="counted",
                product_id=product_id,
                presentation_grams="10",
                lot_number=f"{prefix}{i}",
                expiry_date=Date(year=2027, month=6, day=1 + i),
                vials=10,
                unit_cost=Money(currency_code="GBP", units=340),  # docs/clinical-rules.md#cost
                request_id=f"{prefix}-received-{i}",
            )
        )
    return product_id


def test_a_reservation_sends_a_bounded_number_of_statements(
    platform: Platform, database_url: str
) -> None:
    product_id = _stock_lots(platform, "C", 3)
    _reserve(platform, "warm-up", product_id)  # loads the site and the catalogue
    with statements_by_thread() as counted:
        reservation = _reserve(platform, "counted-1", product_id)
    assert [(line.lot_number, line.vials) for line in reservation.lines] == [("C0", 2)]
    served = counted.of_thread_sending("INSERT INTO reservations")
    assert (
        served
        <= RESERVE_STATEMENTS["sqlite" if database_url.startswith("sqlite") else "postgresql"]
    )
    # the reservation's INSERT bypasses the ORM's flush: its audit record still names it, once
    assert audited_ids(database_url, "inventory", "ReserveStock").count(reservation.id) == 1
    if database_url.startswith("sqlite"):
        return
    with round_trips_by_thread() as trips:
        _reserve(platform, "counted-2", product_id)
    assert trips.of_thread_sending("INSERT INTO reservations") <= RESERVE_ROUND_TRIPS


def test_a_reservation_that_lost_its_lot_is_made_again_and_recorded_once(
    platform: Platform, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction takes the chosen lot's vials between the unlocked read and the
    write: the write fails as a whole (nothing of it stands, the audit record riding in it
    included, though no transaction surrounds it), and the allocation runs again on what is
    left. PostgreSQL only: on SQLite the reservation holds the database's write lock from its
    first statement, so nothing can come between."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock leaves no gap between the read and the write")
    product_id = _stock_lots(platform, "R", 2)
    reads = []
    read = store.promisable

    def read_then_lose_the_first_lot(session: Session, *args: Any) -> list[store.Promisable]:
        seen = read(session, *args)
        reads.append([lot.lot_number for lot in seen])
        if len(reads) == 1:  # a concurrent transaction takes R0's vials, and commits
            write_apart(
                database_url,
                "UPDATE lots SET reserved_vials = on_hand_vials "
                "WHERE site_id = 'counted' AND lot_number = 'R0'",
            )
        return seen

    monkeypatch.setattr(store, "promisable", read_then_lose_the_first_lot)
    reservation = _reserve(platform, "raced-1", product_id)
    assert len(reads) == 2  # read, lost R0, read again
    assert [(line.lot_number, line.vials) for line in reservation.lines] == [("R1", 2)]
    # one record, naming the reservation made, not the first attempt's that failed
    assert audited_ids(database_url, "inventory", "ReserveStock") == [reservation.id]
    # the first attempt left no line, no ledger row and no vial taken from R1 twice
    lots = platform.inventory.ListLots(inv.ListLotsRequest(site_id="counted")).lots
    assert {lot.lot_number: lot.reserved_vials for lot in lots} == {"R0": 10, "R1": 2}
    listed = platform.inventory.ListReservations(
        inv.ListReservationsRequest(site_id="counted", page_size=10)
    ).reservations
    assert [r.id for r in listed] == [reservation.id]


SIZES = [Decimal("1"), Decimal("2.5"), Decimal("5"), Decimal("10"), Decimal("20")]
LOTS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # product
        st.sampled_from(SIZES),
        st.integers(min_value=-1, max_value=6),  # expiry: days after the needed-on day
        st.integers(min_value=1, max_value=8),  # on hand
        st.integers(min_value=0, max_value=3),  # reserved
        st.sampled_from(["AVAILABLE"] * 4 + ["QUARANTINED"]),
    ),
    max_size=30,
)
Lot = tuple[str, Decimal, int, int, int, str]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A database with the inventory's tables for the whole module (hypothesis runs many
    examples in one test, so the schema outlives a test)."""
    if request.param == "sqlite":
        engine = create_engine("sqlite://")
        yield _with_products(engine)
        engine.dispose()
        return
    with fresh_schema(request.getfixturevalue("postgres_server_url")) as url:
        engine = create_engine(url)
        yield _with_products(engine)
        engine.dispose()


def _with_products(engine: Engine) -> Engine:
    """The tables, and products "a" and "b" for the lots to name (PostgreSQL checks the
    foreign key)."""
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        for product in ("a", "b"):
            session.add(
                ProductRow(
                    id=product,
                    code=product,
                    brand=product,
                    manufacturer="",
                    ig_class="IVIG",
                    concentration_percent=Decimal(10),
                    routes=["IV"],
                    document={},
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        session.commit()
    return engine


def _put_lots(session: Session, lots: list[Lot], day: dt.date) -> list[Candidate]:
    """Writes ``lots`` (product, vial grams, days from ``day`` to expiry, on hand, reserved,
    state) at site "s" in place of any there; returns every lot's Candidate that may be
    promised for ``day``, as an allocation over every lot would see them."""
    session.query(LotRow).delete()
    for i, (product, grams, days, on_hand, reserved, state) in enumerate(lots):
        session.add(
            LotRow(
                id=f"lot-{i:03d}",
                site_id="s",
                product_id=product,
                presentation_grams=grams,
                lot_number=f"L{i}",
                expiry_date=day + dt.timedelta(days=days),
                state=state,
                unit_cost=Decimal(1),
                currency="GBP",
                on_hand_vials=on_hand,
                reserved_vials=min(reserved, on_hand),
                created_at=NOW,
                updated_at=NOW,
            )
        )
    session.flush()
    return [
        Candidate(f"lot-{i:03d}", p, g, day + dt.timedelta(days=d), h - min(r, h))
        for i, (p, g, d, h, r, state) in enumerate(lots)
        if state == "AVAILABLE" and d >= 0
    ]


@settings(max_examples=250, deadline=None)
@given(
    lots=LOTS,
    dose=st.sampled_from([Decimal(g) for g in ("2.5", "10", "17.5", "20", "45", "70", "130")]),
    band=st.sampled_from([Decimal(0), Decimal(10)]),
    products=st.sampled_from([("a",), ("a", "b"), ("b", "a")]),
    per_size=st.sampled_from([1, 1, 2, 3, store.PER_SIZE]),  # 32: no size is cut
)
def test_the_bounded_read_chooses_what_every_lot_would(
    engine: Engine,
    lots: list[Lot],
    dose: Decimal,
    band: Decimal,
    products: tuple[str, ...],
    per_size: int,
) -> None:
    """Both reads: the window read first, and on PostgreSQL, the products then counted as
    crowded (any usable lot, here), the walked read, which takes the first ``per_size`` lots
    of each vial size and falls back to every usable lot when a size needs more (small
    ``per_size`` makes both happen)."""
    day = dt.date(2026, 12, 1)
    with Session(engine) as session, patch.object(store, "CROWDED_LOTS", 0):
        every = _put_lots(session, lots, day)
        store._CROWDED.clear()
        for _read in ("window", "walked"):
            seen = store.promisable(session, "s", products, day, dose, per_size=per_size)
            bounded = [Candidate(*c[:5]) for c in seen]
            want = allocate(dose, band, products, every)
            assert allocate(dose, band, products, bounded) == want
        session.rollback()


@pytest.mark.postgres
def test_only_a_crowded_product_is_walked(engine: Engine) -> None:
    """Forty usable lots: above a CROWDED_LOTS of 30 the first read (the window read, which
    counts them) makes the next one walk; at 50 both stay window reads. Both answer alike."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the walked read is PostgreSQL's (SQLite has no LATERAL)")
    day = dt.date(2026, 12, 1)
    lots: list[Lot] = [("a", Decimal("10"), 1 + i, 10, 0, "AVAILABLE") for i in range(40)]
    sent: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    for crowded, walks in ((50, [False, False]), (30, [False, True])):
        sent.clear()
        with Session(engine) as session, patch.object(store, "CROWDED_LOTS", crowded):
            _put_lots(session, lots, day)
            store._CROWDED.clear()
            event.listen(engine, "before_cursor_execute", seen)
            try:
                answers = [store.promisable(session, "s", ["a"], day, Decimal(20)) for _ in walks]
            finally:
                event.remove(engine, "before_cursor_execute", seen)
            assert ["RECURSIVE" in statement for statement in sent] == walks
            assert answers[0] == answers[1]
            assert [lot.lot_number for lot in answers[0]] == ["L0"]  # 100 g holds 20 + 10 + 1
            session.rollback()


@pytest.mark.postgres
def test_the_walked_read_stops_after_the_first_lots_of_each_size(engine: Engine) -> None:
    """Forty lots of ten 10 g vials and forty of ten 5 g vials, expiring a day apart: a 20 g
    dose needs at most 20 + 10 (the largest vial) + 1 = 31 g of a size, which the first lot of
    each holds (100 g and 50 g), so the walk returns one lot of each (the window read would
    return the same, having sorted all 80), and with ``per_size`` 1 it still need not fall
    back. A 2,000 g dose needs 2,011 g of a size: more than the first lot of either size,
    so with ``per_size`` 1 the walk says so (None) and the window read answers."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the walked read is PostgreSQL's (SQLite has no LATERAL)")
    day = dt.date(2026, 12, 1)
    lots: list[Lot] = [
        ("a", grams, 1 + i, 10, 0, "AVAILABLE") for grams in SIZES[2:4] for i in range(40)
    ]
    with Session(engine) as session:
        _put_lots(session, lots, day)
        connection = session.connection()
        params = {
            "site_id": "s",
            "needed_on": day,
            "dose": 20.0,
            "per_size": 1,
            "skip": 0,
            "products": ["a"],
        }
        walked = store._walked(connection, params, Decimal(20), per_size=1)
        assert walked is not None
        assert sorted((w.presentation_grams, w.lot_number) for w in walked) == [
            (Decimal("5"), "L0"),
            (Decimal("10"), "L40"),
        ]
        assert store._walked(connection, {**params, "dose": 2000.0}, Decimal(2000), 1) is None
        every = store.promisable(session, "s", ["a"], day, Decimal(2000), per_size=1)
        # the bound is 2,011 g: 21 lots of 10 g vials (the 21st starts after 20 × 100 g =
        # 2,000 g, below it) and all 40 of 5 g vials (they hold 40 × 50 g = 2,000 g)
        assert len(every) == 21 + 40
        session.rollback()


def test_the_daily_check_reads_the_reservations_lines_in_one_statement(
    platform: Platform,
) -> None:
    """The expiry check runs over every open reservation of the site while it holds the site's
    lot rows locked (ReserveStock waits on them): its reads must not grow with the
    reservations (it read each one's lines with a statement of its own: 10,000 open
    reservations held the lots for seconds)."""
    stock_site(platform, "counted")
    product_id = platform.inventory.GetProduct(
        inv.GetProductRequest(id="gammagard-liquid")
    ).product.id
    platform.inventory.ReceiveStock(
        inv.ReceiveStockRequest(
            site_id="counted",
            product_id=product_id,
            presentation_grams="10",
            lot_number="D0",
            expiry_date=Date(year=2027, month=6, day=1),
            vials=200,
            unit_cost=Money(currency_code="GBP", units=340),  # docs/clinical-rules.md#cost
            request_id="daily-receive",
        )
    )

    def lines_read(reservations: int) -> int:
        for i in range(reservations):
            _reserve(platform, f"daily-{reservations}-{i}", product_id)
        with statements_by_thread() as counted:
            platform.inventory.RunExpiryCheck(inv.RunExpiryCheckRequest(site_id="counted"))
        # the serving thread's (the audit linker may write meanwhile in a thread of its own)
        return counted.of_thread_sending("FROM reservation_lines")

    few = lines_read(2)
    many = lines_read(20)  # 22 open reservations now
    assert many == few
