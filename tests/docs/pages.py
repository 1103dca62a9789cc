"""Reading the docs site's pages for the tests that hold them to the code."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "DOCS",
    "README",
    "REPO",
    "all_pages",
    "code_blocks",
    "page",
    "section",
    "table_rows",
]

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"


def page(name: str) -> str:
    """The text of ``docs/NAME`` (e.g. ``reference/metrics.md``)."""
    return (DOCS / name).read_text()


def all_pages() -> dict[str, str]:
    """Every page of the site and the README, by path relative to the repository."""
    paths = [README, *sorted(DOCS.rglob("*.md"))]
    return {p.relative_to(REPO).as_posix(): p.read_text() for p in paths}


def section(text: str, heading: str) -> str:
    """The body of the section titled ``heading`` (any level), up to the next heading of
    the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\n", text, re.MULTILINE)
    assert match is not None, f"no section {heading!r}"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every table row whose first cell matches the regex ``first_cell``."""
    rows = []
    for line in text.splitlines():
        if not (line.startswith("| ") and line.endswith(" |")):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]
        if re.fullmatch(first_cell, cells[0]):
            rows.append(cells)
    return rows


def code_blocks(text: str, languages: tuple[str, ...] = ("", "sh", "bash")) -> list[str]:
    """The bodies of the fenced code blocks in one of ``languages``."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return [body for language, body in blocks if language in languages]
