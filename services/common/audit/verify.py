"""Walking a service's chain: the first link that does not hold (a record changed, removed,
inserted or reordered after it was written) is reported; everything before it is intact. A
record outside the chain that is not waiting to be linked was written around the trail, and is
reported as well."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.common.audit.record import GENESIS
from services.common.audit.store import Link


@dataclass(frozen=True)
class BrokenLink:
    sequence: int  # the first link that fails (0: a record outside the chain)
    problem: str

    def __str__(self) -> str:
        return f"record {self.sequence}: {self.problem}" if self.sequence else self.problem


@dataclass(frozen=True)
class Verdict:
    checked: int
    broken: BrokenLink | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def _first_problem(link: Link, expected: int, previous: str) -> str:
    if link.sequence != expected:
        return f"sequence {link.sequence} follows {expected - 1}: a link is missing or was inserted"
    if link.previous_hash != previous:
        return "its previous_hash is not the hash of the link before it"
    if link.record is None:
        return f"its record {link.event_id} is gone (deleted)"
    if link.record.chained(link.sequence, link.previous_hash).hash != link.hash:
        return f"its record {link.event_id} does not match its hash (altered)"
    return ""


def verify(links: Iterable[Link], outside: Iterable[str] = ()) -> Verdict:
    expected = 1
    previous = GENESIS
    checked = 0
    for link in links:
        problem = _first_problem(link, expected, previous)
        if problem:
            return Verdict(checked, BrokenLink(link.sequence, problem))
        previous = link.hash
        expected += 1
        checked += 1
    strays = list(outside)
    if strays:
        return Verdict(
            checked,
            BrokenLink(0, f"records outside the chain and not pending: {', '.join(strays)}"),
        )
    return Verdict(checked, None)
