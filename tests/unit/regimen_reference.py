"""A second, independent reading of docs/clinical-rules.md's response-guided regimen rules
(cycles, wearing-off onset, interval proposals, first SC date, SC infusion days and sites,
outcome reviews, prior authorisations, payer caps), written from the rule text in plain
arithmetic without the production module's code. tests/unit/test_regimen_two_implementations.py
checks both give identical figures."""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

DAY = dt.timedelta(days=1)


def plus_months(day: dt.date, n: int) -> dt.date:
    """Same day-of-month n calendar months later, clamped to the month's last day."""
    index = day.year * 12 + (day.month - 1) + n
    year, month = divmod(index, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(day.day, last))


def onset_day(
    day0: dt.date,
    end: dt.date | None,
    reported: list[dt.date],
    measured: list[tuple[dt.date, Decimal]],
    interval: int,
    lower_is_better: bool = False,
    f: Decimal = Decimal("0.5"),
) -> int | None:
    """The onset day of one cycle, or None when there is none or the cycle is not evaluable.
    ``measured`` is in recording order (a later record on the same day wins the baseline)."""
    last = None if end is None else (end - day0).days

    def within(d: int) -> bool:
        return d >= 0 and (last is None or d <= last)

    days = [(r - day0).days for r in reported if within((r - day0).days)]
    if days:
        d = min(days)
        return d if d < interval else None
    values = [((d - day0).days, -v if lower_is_better else v) for d, v in measured]
    baseline = None
    baseline_day = None
    for d, v in values:
        if -7 <= d <= 0 and (baseline_day is None or d >= baseline_day):
            baseline, baseline_day = v, d
    post = sorted((d, v) for d, v in values if d >= 1 and within(d))
    if baseline is None or not post:
        return None
    peak_day, peak = None, None
    for d, v in post:
        if peak is None or v > peak:
            peak_day, peak = d, v
    assert peak is not None and peak_day is not None
    gain = peak - baseline
    if gain <= 0:
        return None
    limit = peak - f * gain
    for d, v in post:
        if d > peak_day and v <= limit:
            return d if d < interval else None
    return None


def expected(onsets: list[int | None], n: int = 3) -> tuple[str, int | None]:
    """onsets: the evaluable cycles oldest first, each its onset day or None (no wearing-off)."""
    if len(onsets) < n:
        return "INCONCLUSIVE", None
    days = sorted(d for d in onsets[len(onsets) - n :] if d is not None)
    if not days:
        return "STABLE", None
    if len(days) < 2:
        return "INCONCLUSIVE", None
    return "WEARING_OFF", days[(len(days) - 1) // 2]


def proposed_interval(e: int, current: int, margin: int = 2, weeks: bool = True) -> int:
    raw = e - margin
    if weeks:
        raw = (raw // 7) * 7
    return min(max(raw, 7), current)


def first_sc(
    last: dt.date, from_iv: bool = True, two_weekly: bool = False, option14: bool = False
) -> dt.date:
    if from_iv and two_weekly and option14:
        return last + 14 * DAY
    return last + 7 * DAY


def sc_days(k: int) -> list[int]:
    return [(7 * i) // k for i in range(k)]


def sites(volume: Decimal, per_site: Decimal) -> int:
    n = int(volume // per_site)
    return n if n * per_site == volume else n + 1


def review_due(start: dt.date, events: list[tuple[dt.date, str]]) -> dt.date | None:
    """events: (date, 'continue'|'stop'|'switch'); a switch's date is the first new-route date."""
    due: dt.date | None = plus_months(start, 6)
    for when, what in sorted(events, key=lambda e: e[0]):
        if due is None:
            break
        if what == "stop":
            due = None
        elif what == "switch":
            due = min(due, plus_months(when, 6))
        else:
            due = plus_months(when, 12)
    return due


def first_authorisation(start: dt.date) -> tuple[dt.date, dt.date]:
    return start, plus_months(start, 6) - DAY


def renewal(previous_end: dt.date) -> tuple[dt.date, dt.date]:
    start = previous_end + DAY
    return start, plus_months(start, 12) - DAY


def authorisation_code(
    periods: list[tuple[dt.date, dt.date]], day: dt.date, required: bool
) -> str | None:
    ends = [b for a, b in periods if a <= day <= b]
    if not ends:
        return "no_authorisation" if required else None
    return "authorisation_expiring" if (max(ends) - day).days <= 30 else None


def cap_code(
    history: list[tuple[dt.date, Decimal, bool]],
    new_day: dt.date,
    new_grams: Decimal,
    new_given: bool,
    cap7: Decimal,
    cap28: Decimal,
) -> tuple[str | None, list[tuple[dt.date, Decimal]]]:
    """history: (date, grams, counts). Returns the code and, per window over its cap, the first
    day and total of the run with the highest total (earliest if tied)."""
    items = [(d, g) for d, g, counts in history if counts] + [(new_day, new_grams)]
    over = []
    for length, cap in ((7, cap7), (28, cap28)):
        best: tuple[dt.date, Decimal] | None = None
        for shift in range(length):
            first = new_day - dt.timedelta(days=length - 1 - shift)
            total = sum((g for d, g in items if 0 <= (d - first).days < length), Decimal(0))
            if total > cap and (best is None or total > best[1]):
                best = (first, total)
        if best is not None:
            over.append(best)
    if not over:
        return None, []
    return ("cap_exceeded_given" if new_given else "payer_cap_exceeded"), over


def vial_amounts(sizes: tuple[Decimal, ...], up_to: Decimal) -> list[Decimal]:
    """Every amount whole vials of these sizes make, from 0 up to ``up_to`` (in 0.05 g units)."""
    unit = Decimal("0.05")
    steps = [int(s / unit) for s in sizes]
    top = int(up_to / unit) + 1
    made = [False] * (top + 1)
    made[0] = True
    for n in range(1, top + 1):
        made[n] = any(n >= s and made[n - s] for s in steps)
    return [n * unit for n in range(top + 1) if made[n]]


def nearest(raw: Decimal, sizes: tuple[Decimal, ...], band: Decimal | None) -> Decimal | None:
    """The whole-vial amount closest to raw, ties to the lower; None if outside ±band % of raw.
    The raw grams are first taken to 0.01 g, half up: the dose calculation's precision (the
    rule text says only "the raw dose"; read literally, 33.7536 g between 32.5 and 35 would
    round to 35, but the dose calculation sees a 33.75 g tie and gives 32.5, and a proposal must
    give the grams CalculateDose will give for the accepted version)."""
    raw = raw.quantize(Decimal("0.01"), ROUND_HALF_UP)
    amounts = [a for a in vial_amounts(sizes, raw + max(sizes)) if a > 0]
    best = min(amounts, key=lambda a: (abs(a - raw), a))
    if band is not None and abs(best - raw) > raw * band / 100:
        return None
    return best


def reduction_grams(
    g_per_kg: Decimal, weight: Decimal, current: Decimal, sizes: tuple[Decimal, ...]
) -> Decimal | None:
    """Grams of a one-day cycle after a 10 % step down; None when the nearest amount is refused
    or no whole-vial amount lies below the current grams."""
    grams = nearest(g_per_kg * Decimal("0.9") * weight, sizes, Decimal(10))
    if grams is None:
        return None
    if grams >= current:
        below = [a for a in vial_amounts(sizes, current) if 0 < a < current]
        return max(below) if below else None
    return grams


def split_days(
    g_per_kg: Decimal, weight: Decimal, sizes: tuple[Decimal, ...], per_day: Decimal = Decimal(1)
) -> list[Decimal | None] | None:
    """None when one day is within the maximum; else each day's rounded grams."""
    if g_per_kg <= per_day:
        return None
    n = 1
    while g_per_kg / n > per_day:
        n += 1
    return [nearest(g_per_kg * weight / n, sizes, Decimal(10)) for _ in range(n)]


# The SC dose and infusion rules' own figures: (PI factor, per-site mL PI, per-site mL CIDP,
# per-site mL under 40 kg, sites at once). MMN: factor 1.00 for every product.
SC_RULES: dict[str, tuple[Decimal, Decimal, Decimal | None, Decimal | None, int | None]] = {
    "hizentra": (Decimal("1.37"), Decimal(25), Decimal(50), None, 4),
    "cuvitru": (Decimal("1.30"), Decimal(60), None, None, 4),
    "cutaquig": (Decimal("1.30"), Decimal(40), None, None, 6),
    "gammagard-liquid": (Decimal("1.37"), Decimal(30), None, Decimal(20), None),
}


def sc_weekly(
    key: str, indication: str, iv_grams: Decimal, iv_interval: int, weight: Decimal
) -> Decimal | None:
    """Weekly raw grams; None where the rule needs a clinician's factor."""
    if indication == "CIDP":
        return Decimal("0.2") * weight if key == "hizentra" else None
    factor = Decimal(1) if indication == "MMN" else SC_RULES[key][0]
    return factor * iv_grams / (Decimal(iv_interval) / 7)


def sc_schedule(
    key: str,
    indication: str,
    weekly: Decimal,
    weight: Decimal,
    sizes: tuple[Decimal, ...],
    conc: Decimal,
    start_two_weekly: bool,
) -> tuple[int, int, Decimal, Decimal, int] | None:
    """(every weeks, per week, grams an infusion, mL, sites) of the first frequency that fits."""
    _, pi, cidp, small, at_once = SC_RULES[key]
    per_site = small if weight < 40 and small is not None else pi
    if (weight >= 40 or small is None) and indication in ("CIDP", "MMN") and cidp is not None:
        per_site = cidp
    tries = [(2, 1)] if start_two_weekly else []
    tries += [(1, k) for k in range(1, 8)]
    for every, k in tries:
        grams = nearest(weekly * every / k, sizes, Decimal(10))
        if grams is None:
            continue
        ml = grams * 100 / conc
        n = sites(ml, per_site)
        if at_once is not None and n > at_once:
            continue
        return every, k, grams, ml, n
    return None


def hyqvia_ramp(
    iv_grams: Decimal,
    interval: int,
    first: dt.date,
    weight: Decimal,
    sizes: tuple[Decimal, ...],
    conc: Decimal = Decimal(10),
) -> tuple[list[tuple[dt.date, Decimal, Decimal, int, bool]], dt.date] | None:
    """Steps (date, grams, mL, sites, over the daily volume) and the first steady date; None when
    there is no ramp for the interval or the full dose is refused by the band."""
    weeks = {
        21: [(1, 1, 3), (2, 2, 3), (4, 1, 1), (7, 1, 1)],
        28: [(1, 1, 4), (2, 1, 2), (4, 3, 4), (7, 1, 1), (11, 1, 1)],
    }.get(interval)
    if weeks is None:
        return None
    full = nearest(iv_grams, sizes, Decimal(10))
    if full is None:
        return None
    steps = []
    for week, top, bottom in weeks:
        grams = full if top == bottom else nearest(iv_grams * top / bottom, sizes, None)
        assert grams is not None
        ml = grams * 100 / conc
        date = first + dt.timedelta(days=7 * (week - 1))
        steps.append(
            (date, grams, ml, sites(ml, Decimal(600)), ml > (1200 if weight >= 40 else 600))
        )
    return steps, steps[-1][0] + dt.timedelta(days=interval)
