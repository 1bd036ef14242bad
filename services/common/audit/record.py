"""One audit record and its place in the service's hash chain.

A record holds ids only (never a patient's name, MRN or birth date) and is hashed over a
canonical JSON form of every field, the previous record's hash included: changing, removing or
reordering any stored record breaks the chain at that record, which ``verify`` reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

GENESIS = "0" * 64
"""The previous hash of a chain's first record."""

MUTATION = "mutation"
PATIENT_READ = "patient-read"
MAX_IDS = 500
"""A record names at most this many resources and patients (a List's largest page)."""


@dataclass(frozen=True)
class AuditRecord:
    service: str
    occurred_at: dt.datetime  # UTC, microseconds
    method: str
    kind: str  # MUTATION or PATIENT_READ
    resource_type: str
    resource_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    subject: str
    caller_kind: str
    client_id: str
    roles: tuple[str, ...]
    token_id: str
    organisation_id: str
    peer: str
    outcome: str  # gRPC status code name
    request_id: str
    purpose: str
    sequence: int = 0  # set when appended
    previous_hash: str = ""
    hash: str = field(default="", compare=False)

    def chained(self, sequence: int, previous_hash: str) -> AuditRecord:
        """This record as the chain's next link."""
        linked = replace(self, sequence=sequence, previous_hash=previous_hash, hash="")
        return replace(linked, hash=record_hash(linked))


def canonical(record: AuditRecord) -> bytes:
    """The bytes the hash covers: every field but the hash, as sorted-key JSON without
    whitespace, the time as ISO 8601 UTC with microseconds, lists as stored."""
    data: dict[str, Any] = asdict(record)
    del data["hash"]
    data["occurred_at"] = record.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    for name in ("resource_ids", "patient_ids", "roles"):
        data[name] = list(data[name])
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: AuditRecord) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


MAX_ID_CHARS = 128
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f]")


def clean(value: str, limit: int = MAX_ID_CHARS) -> str:
    """A value from a request as a record keeps it: a refused request's id may hold anything,
    so control characters and spaces become ``?`` (PostgreSQL stores no NUL; ids are separated
    by spaces) and it is cut at ``limit``."""
    return _UNPRINTABLE.sub("?", value[:limit])


def bounded(ids: Iterable[str]) -> tuple[str, ...]:
    """Sorted, cleaned, without empties, at most MAX_IDS."""
    return tuple(sorted({clean(i) for i in ids if i}))[:MAX_IDS]
