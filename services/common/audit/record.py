"""One audit record and its place in the service's hash chain.

A record holds ids only (never a patient's name, MRN or birth date). Its content hash covers a
canonical JSON form of every field; link ``n`` of the chain hashes ``n``, the previous link's
hash and the record's content hash. Changing, removing or reordering any stored record or link
breaks the chain there, which ``verify`` reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

GENESIS = "0" * 64
"""The previous hash of a chain's first record."""

MUTATION = "mutation"
PATIENT_READ = "patient-read"
MAX_IDS = 500
"""A record names at most this many resources and patients (a List's largest page)."""


@dataclass(frozen=True)
class AuditRecord:
    id: str  # UUIDv7: sorts by creation time
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
    sequence: int = 0  # set when linked into the chain (0: not yet)
    previous_hash: str = ""
    hash: str = field(default="", compare=False)

    def chained(self, sequence: int, previous_hash: str) -> AuditRecord:
        """This record as the chain's link ``sequence`` after ``previous_hash``."""
        return replace(
            self,
            sequence=sequence,
            previous_hash=previous_hash,
            hash=link_hash(sequence, previous_hash, content_hash(self)),
        )


_CONTENT = tuple(
    f.name for f in fields(AuditRecord) if f.name not in ("sequence", "previous_hash", "hash")
)


def canonical(record: AuditRecord) -> bytes:
    """The bytes the content hash covers: every field but the chain's, as sorted-key JSON
    without whitespace, the time as ISO 8601 UTC with microseconds, lists as arrays."""
    data: dict[str, Any] = {name: getattr(record, name) for name in _CONTENT}
    data["occurred_at"] = record.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(record: AuditRecord) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def link_hash(sequence: int, previous_hash: str, content: str) -> str:
    """Link ``sequence``'s hash: it binds the record's content to its place after
    ``previous_hash``."""
    return hashlib.sha256(f"{sequence}:{previous_hash}:{content}".encode()).hexdigest()


def record_hash(record: AuditRecord) -> str:
    """The hash the record's link must hold, from its content and chain fields."""
    return link_hash(record.sequence, record.previous_hash, content_hash(record))


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
