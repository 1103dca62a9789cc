"""Short fault runs on a real broker: lost must be 0 in every scenario.

The long runs (100,000 records each) are ``scripts/faults.py``; see the README.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.faults import SCENARIOS, FaultRun
from scripts.localkafka import LocalKafka, free_port

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own: some scenarios stop and restart it."""
    with LocalKafka(free_port(), tmp_path_factory.mktemp("fault-kafka")) as broker:
        yield broker


@pytest.fixture(params=["at_least_once", "exactly_once"])
def run(
    request: pytest.FixtureRequest,
    own_kafka: LocalKafka,
    tmp_path: Path,
    trained: dict[str, Path],
) -> Iterator[FaultRun]:
    yield FaultRun(
        own_kafka,
        tmp_path,
        trained["wine-logreg"],
        records=3000,
        rate=1500,
        guarantee=request.param,
    )
    if not own_kafka.is_running():
        own_kafka.start()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_record_is_lost(run: FaultRun, scenario: str) -> None:
    result = SCENARIOS[scenario](run)
    assert result.sent == run.records, f"the broker acknowledged only {result.sent} sends"
    assert result.lost == 0, result.row()
    assert result.scored + result.dead_lettered == result.sent
    assert all(result.checks.values()), result.row()
    if run.guarantee == "exactly_once":
        assert result.duplicates == 0, f"exactly_once duplicated records: {result.row()}"
    if scenario == "sigterm":
        assert result.duplicates == 0, f"a graceful stop rescored records: {result.row()}"
        assert result.checks == {"exit code 0": True}
