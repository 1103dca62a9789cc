"""docs/architecture.md matches the code: every module it names exists, and every one is named."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
ROOMS = ("core", "kafka", "http", "grpc", "tools")


def _named() -> set[str]:
    """``room/module.py`` (or ``room/package``) for each backticked name in a room's row."""
    named: set[str] = set()
    for line in DOC.read_text().splitlines():
        room = re.match(r"\| `service/(\w+)/` \|", line)
        if room is None or room.group(1) not in ROOMS:
            continue
        for name in re.findall(r"`(\w+\.py|\w+/)`", line):
            named.add(f"{room.group(1)}/{name.rstrip('/')}")
    return named


def test_every_module_the_architecture_names_exists() -> None:
    named = _named()
    assert len(named) > 30, "the doc's room table was not parsed"
    missing = sorted(n for n in named if not (REPO / "service" / n).exists())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_of_the_rooms_is_named() -> None:
    modules = {
        f"{room}/{p.name}"
        for room in ROOMS
        for p in (REPO / "service" / room).iterdir()
        if not p.name.startswith(("__", "."))
    }
    unnamed = sorted(modules - _named())
    assert not unnamed, f"modules missing from docs/architecture.md: {unnamed}"
