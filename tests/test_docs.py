"""The repository stands on its own: no file cites a document outside it (the old brief's
"§N.N" sections, ../shared/…) or an issue tracker the reader cannot see, and every citation of
docs/clinical-rules.md names an anchor that exists there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docs" / "clinical-rules.md"
SKIP_DIRS = {".git", ".venv", "node_modules", "gen", "third_party", "var", "__pycache__"}
SUFFIXES = {".py", ".proto", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".sh"}
THIS = Path(__file__).resolve()

FORBIDDEN = {
    "a section of the old external brief": re.compile(r"§\s?\d"),
    "the old external brief": re.compile(r"domain\.md|DESIGN\.md"),
    "a path outside the repository": re.compile(r"\.\./shared\b|/work/"),
    "an issue number": re.compile(r"(?i)\bissues?\s?#?\d+"),
}
CITATION = re.compile(r"clinical-rules\.md#([\w-]+)((?:,\s?#[\w-]+)*)")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def text_files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if path.is_file() and (path.suffix in SUFFIXES or path.name == "Makefile"):
            out.append(path)
    return sorted(out)


FILES = text_files()


def anchors() -> set[str]:
    return set(re.findall(r'<a id="([\w-]+)"></a>', RULES.read_text(encoding="utf-8")))


def test_the_files_are_found() -> None:
    assert RULES in FILES and len(FILES) > 100


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_file_cites_what_the_reader_cannot_see(what: str) -> None:
    pattern = FORBIDDEN[what]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}"
        for path in FILES
        if path != THIS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"{what} cited:\n" + "\n".join(found)


def test_every_cited_clinical_rule_exists() -> None:
    defined = anchors()
    missing = []
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in CITATION.finditer(line):
                names = [m.group(1), *re.findall(r"#([\w-]+)", m.group(2))]
                where = f"{path.relative_to(ROOT)}:{number}"
                missing += [f"{where}: #{n}" for n in names if n not in defined]
    assert not missing, "anchors not in docs/clinical-rules.md:\n" + "\n".join(missing)


def test_clinical_rules_anchors_are_unique_and_its_own_links_resolve() -> None:
    text = RULES.read_text(encoding="utf-8")
    ids = re.findall(r'<a id="([\w-]+)"></a>', text)
    assert len(ids) == len(set(ids)), "duplicate anchors"
    linked = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert linked <= set(ids), f"links to missing anchors: {sorted(linked - set(ids))}"
    assert "current label" in text[:2000], "the label warning must stay at the top"


def test_markdown_links_stay_inside_the_repository_and_resolve() -> None:
    broken = []
    for path in FILES:
        if path.suffix != ".md":
            continue
        for target in MD_LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            resolved = (path.parent / target.split("#", 1)[0]).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links outside the repository or to missing files:\n" + "\n".join(broken)
