"""The role × permission table of docs/security.md, generated from the protos' declarations
and the roles file, so the documentation cannot drift from what is enforced (a test compares
the two). ``python -m services.common.auth.table`` prints it; ``--write`` replaces it in
docs/security.md (between the BEGIN/END markers)."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from services.common.auth.policy import declared, methods
from services.common.auth.roles import RESERVED_PERMISSIONS, Roles

DOC = Path(__file__).resolve().parents[3] / "docs" / "security.md"
BEGIN = "<!-- BEGIN generated role table: python -m services.common.auth.table --write -->"
END = "<!-- END generated role table -->"


def table(roles: Roles | None = None) -> str:
    roles = roles or Roles.default()
    rpcs: dict[str, list[str]] = defaultdict(list)
    for method in methods():
        policy = declared(method)
        if policy is not None:
            rpcs[policy.permission].append(method.name)
    names = list(roles.specs)
    lines = [
        "| permission | RPCs | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join(":---:" for _ in names) + " |",
    ]
    for permission in sorted(set(rpcs) | RESERVED_PERMISSIONS):
        cells = []
        for name in names:
            spec = roles.specs[name]
            if permission in roles.authenticated:
                cells.append("✓")
            elif permission not in spec.permissions:
                cells.append("")
            else:
                cells.append("scope" if spec.kind == "client" else "✓")
        calls = ", ".join(rpcs.get(permission, [])) or "(the audit trail's RPCs)"
        lines.append(f"| `{permission}` | {calls} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def section(roles: Roles | None = None) -> str:
    return f"{BEGIN}\n{table(roles)}{END}"


def current(doc: Path = DOC) -> str:
    """The generated section as docs/security.md has it now."""
    text = doc.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.auth.table")
    parser.add_argument("--write", action="store_true", help=f"update {DOC.name} in place")
    args = parser.parse_args(argv)
    if not args.write:
        print(table(), end="")
        return 0
    text = DOC.read_text()
    DOC.write_text(text.replace(current(), section()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
