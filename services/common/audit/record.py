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
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

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

    def raw(self) -> RawRecord:
        """This record as its fields are written to a read journal (cleaning it again keeps
        it as it is)."""
        return RawRecord(
            self.id,
            self.service,
            utc_text(self.occurred_at),
            self.method,
            self.kind,
            self.resource_type,
            list(self.resource_ids),
            list(self.patient_ids),
            self.subject,
            self.caller_kind,
            self.client_id,
            list(self.roles),
            self.token_id,
            self.organisation_id,
            self.peer,
            self.outcome,
            self.request_id,
            self.purpose,
        )

    def chained(self, sequence: int, previous_hash: str) -> AuditRecord:
        """This record as the chain's link ``sequence`` after ``previous_hash``."""
        return replace(
            self,
            sequence=sequence,
            previous_hash=previous_hash,
            hash=link_hash(sequence, previous_hash, content_hash(self)),
        )


_CHAIN = ("sequence", "previous_hash", "hash")


def utc_text(moment: dt.datetime) -> str:
    """A record's time as its canonical form and its journal line hold it: ISO 8601, UTC,
    microseconds."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(record: AuditRecord) -> bytes:
    """The bytes the content hash covers: every field but the chain's, as sorted-key JSON
    without whitespace, the time as ISO 8601 UTC with microseconds, lists as arrays."""
    data: dict[str, Any] = dict(vars(record))
    for name in _CHAIN:
        del data[name]
    data["occurred_at"] = utc_text(record.occurred_at)
    return _CANONICAL.encode(data).encode()


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
MAX_CALLER_CHARS = 256  # a token's subject, client and token id
MAX_ORGANISATION_CHARS = 100
MAX_PEER_CHARS = 300
MAX_METHOD_CHARS = 300
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f\ud800-\udfff]")


def clean(value: str, limit: int = MAX_ID_CHARS) -> str:
    """A value from a request as a record keeps it: a refused request's id may hold anything,
    so control characters, spaces and lone surrogates (a token's claim can hold one; no UTF-8
    can) become ``?`` (PostgreSQL stores no NUL; ids are separated by spaces; the canonical
    form is UTF-8) and it is cut at ``limit``."""
    value = value[:limit]
    if value.isascii() and value.isprintable() and " " not in value:  # nearly every value
        return value
    return _UNPRINTABLE.sub("?", value)


def bounded(ids: Iterable[str]) -> tuple[str, ...]:
    """Sorted, cleaned, without empties, at most MAX_IDS."""
    return tuple(sorted({clean(i) for i in ids if i}))[:MAX_IDS]


class RawRecord(NamedTuple):
    """A record's fields as a call gathers them: cut to their limits but not yet cleaned,
    sorted or hashed. ``cleaned`` makes the record. A read's record on a SQLite file is
    written to the read journal in this form (a JSON array) and cleaned by the keeper that
    collects it (services/common/audit/journal.py): the work on the answering thread is the
    least that keeps the record whole. Cleaning is idempotent, so a record made from a
    cleaned one is the same record."""

    id: str
    service: str
    occurred_at: str  # ISO 8601, UTC, microseconds
    method: str
    kind: str
    resource_type: str
    resource_ids: list[str]
    patient_ids: list[str]
    subject: str
    caller_kind: str
    client_id: str
    roles: list[str]
    token_id: str
    organisation_id: str
    peer: str
    outcome: str
    request_id: str
    purpose: str

    def cleaned(self) -> AuditRecord:
        """The record: every text cleaned and cut, the id lists bounded (ValueError for a time
        without its offset)."""
        occurred_at = dt.datetime.fromisoformat(self.occurred_at)
        if occurred_at.tzinfo is None:
            raise ValueError("audit record time without its offset")
        return AuditRecord(
            id=clean(self.id),
            service=clean(self.service),
            occurred_at=occurred_at.astimezone(dt.UTC),
            method=clean(self.method, MAX_METHOD_CHARS),
            kind=clean(self.kind),
            resource_type=clean(self.resource_type),
            resource_ids=bounded(self.resource_ids),
            patient_ids=bounded(self.patient_ids),
            subject=clean(self.subject, MAX_CALLER_CHARS),
            caller_kind=clean(self.caller_kind),
            client_id=clean(self.client_id, MAX_CALLER_CHARS),
            roles=bounded(self.roles),
            token_id=clean(self.token_id, MAX_CALLER_CHARS),
            organisation_id=clean(self.organisation_id, MAX_ORGANISATION_CHARS),
            peer=clean(self.peer, MAX_PEER_CHARS),
            outcome=clean(self.outcome),
            request_id=clean(self.request_id),
            purpose=clean(self.purpose),
        )


def raw_from(values: object) -> RawRecord:
    """A RawRecord from what a JSON array held (TypeError when it is not one)."""
    if not isinstance(values, list) or len(values) != len(RawRecord._fields):
        raise TypeError("not an audit record's fields")
    for name, value in zip(RawRecord._fields, values, strict=True):
        if not (isinstance(value, str) or _strings(value)):
            raise TypeError(f"audit record field {name}: {type(value).__name__}")
    return RawRecord(*values)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
