"""The shared CRUD plumbing: idempotent mutations, NOT_FOUND, masks, etags and pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.type.date_pb2 import Date

from services.common import errors
from services.common.crud import Mutations, checked_change, found, listed, masked, parsed
from services.common.etag import etag_for
from services.common.pagination import PageRequest


class _RecordingIdempotency:
    """Runs the mutation with a fake session and records the key it was given."""

    def __init__(self) -> None:
        self.methods: list[str] = []
        self.ways: list[tuple[bool, bool]] = []

    def run(
        self,
        method: str,
        request: Message,
        response_type: type[Any],
        mutate: Callable[..., Any],
        *,
        key_last: bool = False,
        statementwise: bool = False,
    ) -> Any:
        self.methods.append(method)
        self.ways.append((key_last, statementwise))
        return mutate("session")


def test_a_mutation_is_keyed_by_service_and_method() -> None:
    idem = _RecordingIdempotency()
    mutate = Mutations(idem, "scheduler")
    response = mutate("CreateSite", Date(), Date, lambda session: Date(year=2026))
    assert idem.methods == ["scheduler.CreateSite"]
    assert response.year == 2026
    mutate("Publish", Date(), Date, lambda session: Date(), key_last=True, statementwise=True)
    assert idem.ways == [(False, False), (True, True)]  # passed on as the servicer asked


def test_found_returns_the_value_or_raises_not_found_naming_it() -> None:
    assert found(3, "site", "s1") == 3
    with pytest.raises(errors.NotFound) as raised:
        found(None, "site", "s1")
    assert raised.value.resource_type == "site"
    assert raised.value.resource_id == "s1"


def _year(msg: Date, v: errors.Violations) -> int:
    if msg.year < 1900:
        v.add("date.year", "must be 1900 or later")
    if msg.month == 0:
        v.add("date.month", "is required")
    return int(msg.year)


def test_parsed_raises_every_violation_the_translation_found() -> None:
    assert parsed(_year, Date(year=2026, month=1)) == 2026
    with pytest.raises(errors.InvalidArgument) as raised:
        parsed(_year, Date(year=1800))
    assert [v.field for v in raised.value.violations] == ["date.year", "date.month"]


def test_masked_translates_the_merged_message() -> None:
    mask = FieldMask(paths=["year"])
    merged = masked(
        Date(year=2025, month=3),
        Date(year=2026, month=9),
        mask,
        ("year", "month"),
        prefix="date",
        translate=lambda m, v: (m.year, m.month),
    )
    assert merged == (2026, 3)


def test_masked_reports_what_the_merged_message_fails() -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        masked(
            Date(year=2025, month=1),
            Date(year=1700),
            FieldMask(paths=["year"]),
            ("year",),
            prefix="date",
            translate=_year,
        )
    assert [v.field for v in raised.value.violations] == ["date.year"]


def test_checked_change_applies_the_change_for_the_current_etag() -> None:
    assert checked_change(etag_for(4), 4, 10, lambda n: n + 1, field="x.etag", resource="x") == 11


def test_checked_change_refuses_a_stale_etag_without_changing() -> None:
    calls: list[int] = []
    with pytest.raises(errors.Aborted):
        checked_change(etag_for(3), 4, 10, calls.append, field="x.etag", resource="x")
    assert calls == []


def test_checked_change_requires_an_etag() -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        checked_change("", 4, 10, lambda n: n, field="x.etag", resource="x")
    assert raised.value.violations[0].field == "x.etag"


def _fetch(items: list[str]) -> Callable[[PageRequest], list[str]]:
    def fetch(page: PageRequest) -> list[str]:
        after = page.after[0] if page.after else ""
        return [i for i in items if i > after][: page.size + 1]

    return fetch


def test_listed_walks_the_pages_with_the_tokens_it_issues() -> None:
    items = [f"{n:02d}" for n in range(7)]
    seen: list[str] = []
    token = ""
    while True:
        rows, token = listed(2, token, scope="things", fetch=_fetch(items), key=lambda i: [i])
        seen.extend(rows)
        if not token:
            break
    assert seen == items


def test_listed_refuses_a_token_from_another_query() -> None:
    _, token = listed(1, "", scope="a", fetch=_fetch(["1", "2"]), key=lambda i: [i])
    with pytest.raises(errors.InvalidArgument) as raised:
        listed(1, token, scope="b", fetch=_fetch(["1", "2"]), key=lambda i: [i])
    assert raised.value.violations[0].field == "page_token"
