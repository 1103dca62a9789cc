"""Integration fixtures: one real Schema Registry (Apicurio) per session, started by our script."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.localkafka import free_port
from scripts.localregistry import LocalRegistry, fetch


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """Apicurio Registry 3.3.3 (Confluent API at ``.url``), in memory, shared by the session:
    every test registers schemas under its own topics' subjects."""
    fetch()
    log = tmp_path_factory.mktemp("registry") / "registry.log"
    with LocalRegistry(free_port(), log_path=log) as registry:
        yield registry
