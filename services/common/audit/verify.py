"""Walking a service's chain: the first record that does not link (a record changed, removed,
inserted or reordered after it was written) is reported; everything before it is intact."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.common.audit.record import GENESIS, AuditRecord, record_hash


@dataclass(frozen=True)
class BrokenLink:
    sequence: int  # the first record that fails
    problem: str

    def __str__(self) -> str:
        return f"record {self.sequence}: {self.problem}"


@dataclass(frozen=True)
class Verdict:
    checked: int
    broken: BrokenLink | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify(records: Iterable[AuditRecord]) -> Verdict:
    expected_sequence = 1
    previous = GENESIS
    checked = 0
    for record in records:
        if record.sequence != expected_sequence:
            return Verdict(
                checked,
                BrokenLink(
                    record.sequence,
                    f"sequence {record.sequence} follows {expected_sequence - 1}: "
                    "a record is missing or was inserted",
                ),
            )
        if record.previous_hash != previous:
            return Verdict(
                checked,
                BrokenLink(
                    record.sequence, "its previous_hash is not the hash of the record before it"
                ),
            )
        if record_hash(record) != record.hash:
            return Verdict(
                checked,
                BrokenLink(record.sequence, "its content does not match its hash (altered)"),
            )
        previous = record.hash
        expected_sequence += 1
        checked += 1
    return Verdict(checked, None)
