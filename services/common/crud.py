"""The CRUD plumbing every servicer repeats, written once.

Each service's Create/Get/List/Update RPCs were the same dozen lines with different names: run
the mutation once per request_id, read a page and mint the next token, merge an update mask and
parse the result, refuse a stale etag, answer NOT_FOUND for a missing row. Here each of those is
one function; a servicer names only what differs (its translation functions and its use case).
Everything resource-specific is passed in as a callable, so this module knows no service's
protobuf types, domain types or rows, and the behaviour stays the one of fieldmask.py, etag.py,
idempotency.py and pagination.py, which it composes rather than repeats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from sqlalchemy.orm import Session

from services.common.errors import NotFound, Violations
from services.common.etag import check_etag
from services.common.fieldmask import apply_mask
from services.common.pagination import PageRequest, page_request, split_page

T = TypeVar("T")
U = TypeVar("U")
M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)
Mutation = Callable[[Session], R]
"""What a mutating RPC does in its write transaction, returning its response."""


class _Idempotency(Protocol):
    """What Mutations needs of services.common.idempotency.IdempotencyStore (a fake in tests)."""

    def run(
        self,
        method: str,
        request: Message,
        response_type: type[R],
        mutate: Mutation[R],
        *,
        key_last: bool = False,
        statementwise: bool = False,
    ) -> R: ...


class Mutations:
    """A service's mutating RPCs, each run once per request_id in one write transaction.

    The method is keyed ``<service>.<RPC>`` so two services sharing a database, or two RPCs
    given one request_id, never replay each other's responses.
    """

    def __init__(self, idempotency: _Idempotency, service: str) -> None:
        self._idempotency = idempotency
        self._service = service

    def __call__(
        self,
        method: str,
        request: Message,
        rtype: type[R],
        fn: Mutation[R],
        *,
        key_last: bool = False,
        statementwise: bool = False,
    ) -> R:
        """``key_last``, ``statementwise``: the request_id's key written with the mutation's
        last write rather than claimed first, and on PostgreSQL no transaction around a
        mutation that is one write (services.common.idempotency says when each may be used)."""
        return self._idempotency.run(
            f"{self._service}.{method}",
            request,
            rtype,
            fn,
            key_last=key_last,
            statementwise=statementwise,
        )


def found(value: T | None, kind: str, key: str) -> T:
    """``value``, or NOT_FOUND naming ``kind`` and ``key`` when there is none (a row out of the
    caller's scope is looked up as None too, so its existence never leaks)."""
    if value is None:
        raise NotFound(kind, key)
    return value


def parsed(translate: Callable[[M, Violations], T], message: M) -> T:
    """A message translated to its domain value; INVALID_ARGUMENT with every field violation
    the translation found, not just the first."""
    v = Violations()
    value = translate(message, v)
    v.raise_if_any()
    return value


def masked(
    current: M,
    patch: M,
    mask: FieldMask,
    mutable: Iterable[str],
    *,
    prefix: str,
    translate: Callable[[M, Violations], T],
) -> T:
    """The domain value after applying ``patch``'s masked fields to ``current`` (AIP-134):
    the merge happens on messages so the mask's paths are the API's field names, then the
    merged message is translated as a create request's would be."""
    merged: M = apply_mask(current, patch, mask, mutable, prefix=prefix)  # type: ignore[assignment]
    return parsed(translate, merged)


def checked_change(
    etag: str,
    revision: int,
    current: T,
    change: Callable[[T], U],
    *,
    field: str,
    resource: str,
) -> U:
    """``change(current)`` if ``etag`` names ``revision``: ABORTED when someone changed the
    resource since the caller read it, INVALID_ARGUMENT without an etag (AIP-154). Call it with
    the row locked for update so the revision cannot move in between."""
    check_etag(etag, revision, field=field, resource=resource)
    return change(current)


def listed(
    page_size: int,
    page_token: str,
    *,
    scope: str,
    fetch: Callable[[PageRequest], Sequence[T]],
    key: Callable[[T], list[str]],
) -> tuple[list[T], str]:
    """One page of a list and the next page's token (AIP-158). ``scope`` names the query and
    its filters, so a token from another query is refused; ``fetch`` reads up to
    ``page.size + 1`` items after ``page.after``; ``key`` is an item's position in the order."""
    page = page_request(page_size, page_token, scope=scope)
    return split_page(list(fetch(page)), page, key, scope=scope)
