"""Etags for optimistic concurrency (AIP-154): derived from a row's revision counter."""

from __future__ import annotations

from services.common.errors import Aborted, FieldViolation, InvalidArgument


def etag_for(revision: int) -> str:
    return f'W/"{revision}"'


def check_etag(given: str, revision: int, *, field: str, resource: str) -> None:
    """A missing etag is the caller's mistake; a stale one means someone changed it first."""
    if not given:
        raise InvalidArgument(
            [FieldViolation(field, "is required: read the resource first")],
            reason="ETAG_REQUIRED",
        )
    if given != etag_for(revision):
        raise Aborted(
            f"{resource} was changed by someone else (etag {given} is stale; current "
            f"{etag_for(revision)}): read it again and re-apply your change",
            metadata={"current_etag": etag_for(revision)},
            reason="STALE_ETAG",
        )
