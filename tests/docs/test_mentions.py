"""What the README and every docs page name exists: settings, metrics, commands and their
options, make targets. A rename in the code fails here until the docs follow."""

from __future__ import annotations

import argparse
import re

import pytest

from service.cli import COMMANDS, _parser
from service.core.metrics import Metrics
from service.core.settings import Settings
from tests.docs.pages import REPO, all_pages, code_blocks

PAGES = all_pages()


def _options() -> dict[str, set[str]]:
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: set(commands[name]._option_string_actions) for name in COMMANDS}


def _metric_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        if family.type == "histogram":
            names |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count")}
    return names


def _commands_in(block: str) -> list[tuple[str, list[str]]]:
    """(command, its --options) for each ``hotswap COMMAND ...`` in a shell block."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.split(r"(?:^|\s)#|\||&&|;", line)[0]  # comments, pipes, further commands
        for match in re.finditer(r"(?:^|[\s/])hotswap ([a-z][a-z-]*)(.*)", line):
            rest = re.split(r"\shotswap\s", match.group(2))[0]
            found.append((match.group(1), re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest)))
    return found


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_setting_named_exists(name: str) -> None:
    settings = {f"HOTSWAP_{field.upper()}" for field in Settings.model_fields}
    named = {m.rstrip("_") for m in re.findall(r"\bHOTSWAP_[A-Z][A-Z0-9_]*", PAGES[name])}
    assert not named - settings, f"{name} names settings that do not exist"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_metric_named_exists(name: str) -> None:
    # Metrics are written in code spans, bare or with labels: `hotswap_stalled`, `name{label}`.
    named = set(re.findall(r"`(hotswap_[a-z_]+[a-z])(?:\{[^`]*\})?`", PAGES[name]))
    assert not named - _metric_names(), f"{name} names metrics that do not exist"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_command_in_a_code_block_exists_with_its_options(name: str) -> None:
    options = _options()
    wrong = []
    for block in code_blocks(PAGES[name]):
        for command, flags in _commands_in(block):
            if command not in options:
                wrong.append(f"hotswap {command}")
            wrong += [f"hotswap {command} {f}" for f in flags if f not in options[command]]
    assert not wrong, f"{name}: no such command or option: {wrong}"


def test_every_command_is_documented_beyond_the_cli_page() -> None:
    """Each command appears in a page a user reads, not only in the generated reference."""
    prose = " ".join(text for name, text in PAGES.items() if name != "docs/reference/cli.md")
    missing = {c for c in COMMANDS if f"hotswap {c}" not in prose}
    assert not missing


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_make_target_named_exists(name: str) -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z-]*)`", PAGES[name]))
    for block in code_blocks(PAGES[name]):
        named |= set(re.findall(r"^make ([a-z][a-z-]*)", block, re.MULTILINE))
    assert not named - targets, f"{name} names make targets that do not exist"
