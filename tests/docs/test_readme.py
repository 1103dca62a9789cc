"""The README is the front page: short, its two commands real, every link resolving, and a
link to every page of the docs site."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.pages import DOCS, README, REPO

TEXT = README.read_text()
#: ``[text](target)``, not images, not inside inline code.
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slugs(markdown: Path) -> set[str]:
    """GitHub's anchors for the headings of ``markdown``."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", markdown.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def _links() -> list[str]:
    prose = re.sub(r"```.*?```", "", TEXT, flags=re.DOTALL)
    return [t for t in LINK.findall(prose) if not re.match(r"[a-z]+:", t)]


def test_every_link_of_the_readme_resolves() -> None:
    links = _links()
    assert len(links) > 20, "the README's links were not parsed"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (README.parent / path).resolve() if path else README
        anchor_missing = bool(anchor) and (target.suffix != ".md" or anchor not in _slugs(target))
        if not target.exists() or anchor_missing:
            broken.append(link)
    assert not broken, f"README links that resolve to nothing: {broken}"


def test_the_readme_links_every_page_of_the_site() -> None:
    nav = set(re.findall(r":\s+(\S+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), re.MULTILINE))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert nav == pages, "mkdocs.yml's nav and docs/ differ"
    linked = {
        str(Path(link.partition("#")[0]).relative_to("docs"))
        for link in _links()
        if link.startswith("docs/")
    }
    assert pages <= linked, f"pages the README does not link: {sorted(pages - linked)}"


def test_the_two_commands_are_make_targets() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in TEXT
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"no make {target}"


def test_the_readme_is_a_front_page() -> None:
    assert len(TEXT.splitlines()) <= 200, "the README grows again: move the detail to docs/"


def test_the_readme_performance_table_is_the_last_full_run() -> None:
    """Nothing older: its rows are the performance page's printout, row for row."""
    block = re.search(r"^## Performance\n.*?^```text\n(.*?)^```", TEXT, re.MULTILINE | re.DOTALL)
    assert block is not None, "the README lost its Performance table"
    page = (DOCS / "reference" / "performance.md").read_text()
    rows = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(rows) >= 3
    assert all(line in page.splitlines() for line in rows), rows
