"""Keyset page tokens (AIP-158): opaque to callers, stable under inserts."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from services.common.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: list[str] | None


def page_request(page_size: int, page_token: str, *, scope: str) -> PageRequest:
    """Validate size and token; ``scope`` binds a token to the query that issued it."""
    problems = []
    if page_size < 0:
        problems.append(FieldViolation("page_size", "must not be negative"))
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    after = None
    if page_token:
        try:
            data = json.loads(base64.urlsafe_b64decode(page_token.encode()))
            if data.get("s") != scope or not isinstance(data.get("k"), list):
                raise ValueError("token from another query")
            after = [str(part) for part in data["k"]]
            if any(_CONTROL.search(part) for part in after):
                raise ValueError("a key no list issues")  # e.g. a NUL PostgreSQL refuses
        except (ValueError, binascii.Error, AttributeError):
            problems.append(
                FieldViolation("page_token", "is not a token this list issued; start again")
            )
    if problems:
        raise InvalidArgument(problems)
    return PageRequest(size=size, after=after)


def page_token(key: list[str], *, scope: str) -> str:
    raw = json.dumps({"s": scope, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def split_page(
    rows: list[T], page: PageRequest, key: Callable[[T], list[str]], *, scope: str
) -> tuple[list[T], str]:
    """Rows of this page and the next page's token (queries fetch ``size + 1`` rows)."""
    if len(rows) <= page.size:
        return rows, ""
    kept = rows[: page.size]
    return kept, page_token(key(kept[-1]), scope=scope)
