"""Every reason an error can carry is listed in docs/api.md, with its status code, and nothing
else is. The reasons are the Literal types of services/common/reasons.py: mypy (make lint)
refuses a raise site whose reason, rule or default is not among them, so the types are what
the code can raise."""

from __future__ import annotations

import re
from typing import get_args

from services.common import reasons
from services.common.settings import REPO_ROOT

CODES = {
    reasons.Rule: "FAILED_PRECONDITION",
    reasons.InvalidReason: "INVALID_ARGUMENT",
    reasons.NotFoundReason: "NOT_FOUND",
    reasons.ExistsReason: "ALREADY_EXISTS",
    reasons.DeniedReason: "PERMISSION_DENIED",
    reasons.AbortReason: "ABORTED",
    reasons.UnavailableReason: "UNAVAILABLE",
}
# AIP-193: UPPER_SNAKE, at most 63 characters
AIP_193 = re.compile(r"^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$")


def documented() -> dict[str, str]:
    """reason → code, from the "Error reasons" table of docs/api.md."""
    text = (REPO_ROOT / "docs" / "api.md").read_text()
    section = text.split("### Error reasons", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([A-Z_]+) \|", section, flags=re.MULTILINE)
    assert len(rows) == len(dict(rows)), "a reason is listed twice"
    return dict(rows)


def test_the_groups_make_up_every_reason_once() -> None:
    grouped = [reason for group in CODES for reason in get_args(group)]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == set(get_args(reasons.Reason))


def test_every_reason_is_in_the_docs_table_with_its_code_and_nothing_else_is() -> None:
    expected = {reason: code for group, code in CODES.items() for reason in get_args(group)}
    table = documented()
    assert sorted(set(expected) - set(table)) == [], "missing from docs/api.md"
    assert sorted(set(table) - set(expected)) == [], "in docs/api.md but never raised"
    assert table == expected


def test_reasons_are_aip_193_names_not_status_codes() -> None:
    status_codes = set(CODES.values()) | {"NOT_FOUND", "INTERNAL", "UNKNOWN"}
    for reason in get_args(reasons.Reason):
        assert AIP_193.match(reason), reason
        assert reason not in status_codes, reason
