"""Errors a user's request can cause, free of gRPC so domain code can raise them.

The server interceptor (services.common.interceptors) turns each into its status code with
google.rpc error details, so a caller always learns which field or rule was wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

BRIEF_CHARS = 64
MAX_VIOLATIONS = 20
"""An error lists at most this many field violations; the message says how many more."""


def brief(value: str, limit: int = BRIEF_CHARS) -> str:
    """The caller's input as an error may quote it: at most ``limit`` characters, cut with an
    ellipsis, so an error never grows with the request."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


class DomainError(Exception):
    """Base of every error that is the caller's to fix (never INTERNAL)."""

    reason: str = "DOMAIN_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str
    rule: str = ""  # the contract rule broken, e.g. "string.max_len" (BadRequest's reason)


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(
        self, violations: Iterable[FieldViolation], message: str | None = None, *, omitted: int = 0
    ) -> None:
        every = list(violations)
        self.violations = every[:MAX_VIOLATIONS]
        self.omitted = len(every) - len(self.violations) + omitted  # found, but not listed
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        if self.omitted:
            text += f"; and {self.omitted} more"
        super().__init__(text or "invalid request")


class NotFound(DomainError):
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        self.resource_type = resource_type
        self.resource_id = resource_id
        super().__init__(f"{resource_type} {brief(resource_id)!r} not found")


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"

    def __init__(self, resource_type: str, resource_id: str, message: str | None = None) -> None:
        self.resource_type = resource_type
        self.resource_id = resource_id
        super().__init__(message or f"{resource_type} {brief(resource_id)!r} already exists")


@dataclass(frozen=True)
class PreconditionViolation:
    type: str
    subject: str
    description: str


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"

    def __init__(self, violations: Iterable[PreconditionViolation], message: str | None = None):
        self.violations = list(violations)
        text = message or "; ".join(f"{v.type}: {v.description}" for v in self.violations)
        super().__init__(text)


class Aborted(DomainError):
    """A stale etag or a lost race: the caller should re-read and retry."""

    reason = "ABORTED"

    def __init__(self, message: str, metadata: dict[str, str] | None = None) -> None:
        self.metadata = dict(metadata or {})
        super().__init__(message)


class Unavailable(DomainError):
    """A peer service could not be reached; retrying later may succeed."""

    reason = "UNAVAILABLE"


@dataclass
class Violations:
    """Collects every bad field of a request before raising, so one reply lists them all."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def extend(self, other: Iterable[FieldViolation]) -> None:
        self.items.extend(other)

    def require(self, value: str, field_path: str) -> str:
        """Note the field if it is empty (or only blanks); the value, for chaining."""
        if not value.strip():
            self.add(field_path, "is required")
        return value

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


def required(value: str, field_path: str) -> str:
    """The value of a field that must be given; INVALID_ARGUMENT naming it when empty."""
    v = Violations()
    v.require(value, field_path)
    v.raise_if_any()
    return value
