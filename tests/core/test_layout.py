"""The folder tree is the architecture: the core imports no transport, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
TRANSPORTS = {
    "faust",
    "mode",
    "aiokafka",
    "confluent_kafka",
    "fastapi",
    "starlette",
    "uvicorn",
    "grpc",
}
OTHER_ROOMS = {
    "service.kafka",
    "service.http",
    "service.grpc",
    "service.tools",
    "service.worker",
    "service.cli",
    "service.entry",
}
GENERATED = SERVICE / "grpc" / "generated"  # protoc's output, checked by tests/grpc instead


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


CORE_MODULES = sorted((SERVICE / "core").rglob("*.py"))


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(SERVICE)))
def test_core_imports_no_transport_and_no_other_room(path: Path) -> None:
    bad = {
        name
        for name in _imports(path)
        if name.split(".")[0] in TRANSPORTS
        or any(name == room or name.startswith(room + ".") for room in OTHER_ROOMS)
    }
    assert not bad, (
        f"{path.relative_to(SERVICE)} imports {sorted(bad)}: the core stays transport-free"
    )


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The AST walk finds both import forms (so the test above can fail)."""
    module = tmp_path / "m.py"
    module.write_text("import faust\nfrom confluent_kafka import Consumer\n")
    assert {"faust", "confluent_kafka"} <= _imports(module)


def test_service_shows_the_design() -> None:
    names = {p.name for p in SERVICE.iterdir() if not p.name.startswith("__")}
    rooms = {"core", "kafka", "http", "grpc", "tools", "worker.py", "cli.py", "entry.py"}
    assert rooms <= names
    assert names - rooms <= {"py.typed"}


WRITTEN = sorted(p for p in SERVICE.rglob("*.py") if not p.is_relative_to(GENERATED))


@pytest.mark.parametrize("path", WRITTEN, ids=lambda p: str(p.relative_to(SERVICE)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= 320, f"{path.relative_to(SERVICE)} has {lines} lines; split it by purpose"
