"""The vial-choice rules of domain/allocation.py on hand-worked shelves, and their invariants
under random shelves (hypothesis)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.inventory.domain.allocation import Allocation, Candidate, Shortfall, allocate

D = Decimal
JAN, MAR, JUN, DEC = (
    dt.date(2027, 1, 31),
    dt.date(2027, 3, 31),
    dt.date(2027, 6, 30),
    dt.date(2026, 12, 31),
)


def lot(lot_id: str, grams: str, expiry: dt.date, vials: int, product: str = "p") -> Candidate:
    return Candidate(lot_id, product, D(grams), expiry, vials)


def chosen(result: Allocation | list[Shortfall]) -> Allocation:
    assert isinstance(result, Allocation), result
    return result


def test_35_g_from_5_10_20_g_vials_across_expiries() -> None:
    shelf = [
        lot("A", "20", JAN, 3),
        lot("B", "10", MAR, 5),
        lot("C", "5", JUN, 10),
        lot("D", "5", DEC, 1),
    ]
    # Rule 2: 35 g can be made exactly, so the total is 35 (no overfill).
    # Rule 3: D (Dec) first: 5 g, leaving 30 g, makeable from the rest → take it.
    #         A (Jan): at most 30 g left; 20 g leaves 10 g (makeable from B or C) → take 20;
    #                  2 × 20 = 40 > 30, so one vial.
    #         B (Mar): 10 g left → one 10 g vial. C (Jun) gives nothing.
    a = chosen(allocate(D(35), D(0), ["p"], shelf))
    assert a.lines == (("D", 1), ("A", 1), ("B", 1))
    assert (a.total_grams, a.overfill_grams, a.vials) == (D(35), D(0), 3)


def test_least_overfill_ranks_before_fefo() -> None:
    # Old lot of 20 g vials, new lot of 5 g vials. FEFO alone would open 2 × 20 g = 40 g for a
    # 35 g dose (5 g wasted); the amount rule wants 35 exactly: 20 (old) + 3 × 5 (new) = 35.
    shelf = [lot("OLD", "20", JAN, 5), lot("NEW", "5", JUN, 10)]
    a = chosen(allocate(D(35), D(0), ["p"], shelf))
    assert a.lines == (("OLD", 1), ("NEW", 3))
    assert a.overfill_grams == 0


def test_fefo_ranks_before_fewest_vials() -> None:
    # 20 g dose: one 20 g vial (Jun) would be fewest vials, but the older 10 g lot (Jan) goes
    # first: 2 × 10 g = 20 g.
    shelf = [lot("BIG", "20", JUN, 5), lot("SMALL", "10", JAN, 5)]
    assert chosen(allocate(D(20), D(0), ["p"], shelf)).lines == (("SMALL", 2),)


def test_fewest_vials_then_fewest_lots_within_one_expiry() -> None:
    # Same expiry: 30 g as 1 × 20 + 1 × 10 (2 vials) beats 3 × 10 (3 vials). Of two 10 g lots
    # the fuller one is used (one lot number to record, not two).
    shelf = [lot("T20", "20", JUN, 1), lot("T10a", "10", JUN, 2), lot("T10b", "10", JUN, 6)]
    a = chosen(allocate(D(30), D(0), ["p"], shelf))
    assert sorted(a.lines) == [("T10b", 1), ("T20", 1)]


def test_overfill_when_the_vials_cannot_make_the_dose() -> None:
    # 35 g from 20 g vials: 2 × 20 = 40 g, 5 g opened and not given.
    a = chosen(allocate(D(35), D(0), ["p"], [lot("T", "20", JUN, 4)]))
    assert (a.total_grams, a.overfill_grams) == (D(40), D(5))


def test_band_only_when_the_stock_cannot_cover() -> None:
    shelf = [lot("T", "10", JUN, 3)]  # 30 g on the shelf
    # 32 g: no cover; 10 % band → at least 28.8 g: 30 g is taken.
    assert chosen(allocate(D(32), D(10), ["p"], shelf)).total_grams == D(30)
    # 5 % band → at least 30.4 g: refused, saying what could be promised.
    short = allocate(D(32), D(5), ["p"], shelf)
    assert short == [Shortfall("p", D(30), ((D(10), 3),))]


def test_half_gram_units_for_2_5_g_vials() -> None:
    # Gammagard 1 g and 2.5 g vials: unit 0.5 g. 3.5 g = 1 × 1 + 1 × 2.5 (2 vials).
    shelf = [lot("ONE", "1", JUN, 5), lot("TWO5", "2.5", JUN, 5)]
    a = chosen(allocate(D("3.5"), D(0), ["p"], shelf))
    assert sorted(a.lines) == [("ONE", 1), ("TWO5", 1)]


def test_substitute_product_only_when_the_first_cannot_cover() -> None:
    shelf = [lot("G", "10", JUN, 1, "gamma"), lot("P", "10", JUN, 5, "priv")]
    assert chosen(allocate(D(10), D(0), ["gamma", "priv"], shelf)).product_id == "gamma"
    assert chosen(allocate(D(20), D(0), ["gamma", "priv"], shelf)).product_id == "priv"


SIZES = st.sampled_from(["1", "2.5", "5", "10", "20"])
SMALL_SHELF = st.lists(
    st.tuples(SIZES, st.integers(0, 3), st.integers(0, 3)), min_size=0, max_size=4
)


def _oracle(
    lots: list[Candidate], dose: Decimal, band: Decimal
) -> tuple[Decimal, tuple[Decimal, ...], int] | None:
    """Every mix the shelf allows, ranked by rules 2, 3 and 4 by brute force."""
    days = sorted({c.expiry_date for c in lots})
    mixes = []
    for counts in itertools.product(*(range(c.available_vials + 1) for c in lots)):
        total = sum((c.presentation_grams * n for c, n in zip(lots, counts, strict=True)), D(0))
        per_day = tuple(
            sum(
                (
                    c.presentation_grams * n
                    for c, n in zip(lots, counts, strict=True)
                    if c.expiry_date == d
                ),
                D(0),
            )
            for d in days
        )
        mixes.append((total, per_day, sum(counts)))
    covering = [m for m in mixes if m[0] >= dose]
    if covering:
        target = min(m[0] for m in covering)
    else:
        inside = [m for m in mixes if dose * (1 - band / 100) <= m[0] < dose and m[0] > 0]
        if not inside:
            return None
        target = max(m[0] for m in inside)
    best = [m for m in mixes if m[0] == target]
    # rule 3: lexicographically most grams from the earliest expiry; rule 4: fewest vials
    return max(best, key=lambda m: (m[1], -m[2]))


@settings(max_examples=400, deadline=None)
@given(shelf=SMALL_SHELF, dose=st.integers(1, 60), band=st.sampled_from([0, 10, 25]))
def test_allocation_matches_a_brute_force_ranking(
    shelf: list[tuple[str, int, int]], dose: int, band: int
) -> None:
    lots = [
        lot(f"L{i}", g, dt.date(2027, 1, 1) + dt.timedelta(days=d), n)
        for i, (g, d, n) in enumerate(shelf)
    ]
    expected = _oracle(lots, D(dose), D(band))
    result = allocate(D(dose), D(band), ["p"], lots)
    if expected is None:
        assert not isinstance(result, Allocation)
        return
    assert isinstance(result, Allocation), (result, expected)
    by_id = {c.lot_id: c for c in lots}
    assert all(0 < n <= by_id[i].available_vials for i, n in result.lines)  # never over
    days = sorted({c.expiry_date for c in lots})
    per_day = tuple(
        sum(
            (by_id[i].presentation_grams * n for i, n in result.lines if by_id[i].expiry_date == d),
            D(0),
        )
        for d in days
    )
    assert (result.total_grams, per_day, result.vials) == expected
