"""Errors a user's request can cause, free of gRPC so domain code can raise them.

The server interceptor (services.common.interceptors) turns each into its status code with
google.rpc error details, so a caller always learns which field or rule was wrong.

Each error carries a ``reason`` (services.common.reasons) and ErrorInfo ``metadata``. Both are
derived from what the error holds, so a raise site cannot leave them out: the first violated
rule, the bad fields, the kind of resource. A raise site passes ``reason=`` only where it knows
a more specific name (a duplicate MRN rather than any existing resource).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from services.common.reasons import (
    AbortReason,
    DeniedReason,
    ExistsReason,
    InvalidReason,
    Reason,
    Rule,
    UnavailableReason,
)

# ErrorInfo metadata lists at most this many bad fields (BadRequest has them all): metadata is
# for branching on, and a reply stays small however many fields a request got wrong.
MAX_LISTED_FIELDS = 10

BRIEF_CHARS = 64
MAX_VIOLATIONS = 20
"""An error lists at most this many field violations; the message says how many more."""


def brief(value: str, limit: int = BRIEF_CHARS) -> str:
    """The caller's input as an error may quote it: at most ``limit`` characters, cut with an
    ellipsis, so an error never grows with the request."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


class DomainError(Exception):
    """Base of every error that is the caller's to fix (never INTERNAL)."""

    default_reason: ClassVar[Reason]

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason: Reason = reason or self.derived_reason()
        self.metadata: dict[str, str] = {**self.derived_metadata(), **(metadata or {})}

    def derived_reason(self) -> Reason:
        """The reason when the raise site names none."""
        return self.default_reason

    def derived_metadata(self) -> dict[str, str]:
        """ErrorInfo metadata that follows from the error itself."""
        return {}


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str
    rule: str = ""  # the contract rule broken, e.g. "string.max_len" (BadRequest's reason)


class InvalidArgument(DomainError):
    default_reason = "INVALID_FIELDS"

    def __init__(
        self,
        violations: Iterable[FieldViolation],
        message: str | None = None,
        *,
        omitted: int = 0,
        reason: InvalidReason | None = None,
    ) -> None:
        every = list(violations)
        self.violations = every[:MAX_VIOLATIONS]
        self.omitted = len(every) - len(self.violations) + omitted  # found, but not listed
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        if self.omitted:
            text += f"; and {self.omitted} more"
        super().__init__(text or "invalid request", reason=reason)

    def derived_metadata(self) -> dict[str, str]:
        names = list(dict.fromkeys(v.field for v in self.violations))
        listed = names[:MAX_LISTED_FIELDS]
        return {"fields": ",".join(listed), "field_count": str(len(names) + self.omitted)}


class NotFound(DomainError):
    default_reason = "RESOURCE_NOT_FOUND"

    def __init__(self, resource_type: str, resource_id: str) -> None:
        self.resource_type = resource_type
        self.resource_id = resource_id
        super().__init__(f"{resource_type} {brief(resource_id)!r} not found")

    def derived_metadata(self) -> dict[str, str]:
        return {"resource_type": self.resource_type}


class PermissionDenied(DomainError):
    """The caller may make this call but not for what it named: an organisation or a site it
    does not act for, where it creates something (docs/security.md, "Scope"). Reading or
    changing an existing resource out of scope is NOT_FOUND instead, so no id leaks."""

    default_reason = "OUT_OF_SCOPE"

    def __init__(self, message: str, *, reason: DeniedReason | None = None) -> None:
        super().__init__(message, reason=reason)


class AlreadyExists(DomainError):
    default_reason = "RESOURCE_EXISTS"

    def __init__(
        self,
        resource_type: str,
        resource_id: str,
        message: str | None = None,
        *,
        reason: ExistsReason | None = None,
    ) -> None:
        self.resource_type = resource_type
        self.resource_id = resource_id
        super().__init__(
            message or f"{resource_type} {brief(resource_id)!r} already exists", reason=reason
        )

    def derived_metadata(self) -> dict[str, str]:
        return {"resource_type": self.resource_type}


@dataclass(frozen=True)
class PreconditionViolation:
    type: Rule
    subject: str
    description: str


class FailedPrecondition(DomainError):
    """A rule about state is broken; the reason is the (first) rule's name."""

    def __init__(
        self,
        violations: Iterable[PreconditionViolation],
        message: str | None = None,
        *,
        reason: Rule | None = None,
    ):
        self.violations = list(violations)
        text = message or "; ".join(f"{v.type}: {v.description}" for v in self.violations)
        super().__init__(text, reason=reason)

    def derived_reason(self) -> Reason:
        if not self.violations:
            raise ValueError("a FailedPrecondition names the rule it breaks")
        return self.violations[0].type

    def derived_metadata(self) -> dict[str, str]:
        return {"rule": self.violations[0].type} if self.violations else {}


class Aborted(DomainError):
    """A stale etag or a lost race: the caller should re-read and retry."""

    default_reason = "CONCURRENT_UPDATE"

    def __init__(
        self,
        message: str,
        metadata: Mapping[str, str] | None = None,
        *,
        reason: AbortReason | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)


class Unavailable(DomainError):
    """A peer service or the database could not be reached; retrying later may succeed."""

    default_reason = "PEER_UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        reason: UnavailableReason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)


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
