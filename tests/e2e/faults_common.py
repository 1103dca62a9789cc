"""The short fault runs on a real broker, shared by the two guarantees' test files.

Lost must be 0 in every scenario, and under exactly_once duplicates too. One file
per guarantee (``test_faults.py``, ``test_faults_exactly_once.py``), each with a
broker of its own (the ``own_kafka`` fixture), so the two halves run on two
pytest-xdist workers at once. The long runs (100,000 records each) are
``scripts/faults.py``; see the README.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.faults import SCENARIOS, FaultRun
from scripts.localkafka import LocalKafka

__all__ = ["run", "test_no_record_is_lost"]


@pytest.fixture
def run(
    own_kafka: LocalKafka, tmp_path: Path, trained: dict[str, Path], guarantee: str
) -> Iterator[FaultRun]:
    """One scenario's run under the module's ``guarantee``; its workers are killed and the
    broker is started again if the scenario (failing half-way) left them so."""
    run = FaultRun(
        own_kafka, tmp_path, trained["wine-logreg"], records=3000, rate=1500, guarantee=guarantee
    )
    yield run
    run.kill_all()
    if not own_kafka.is_running():
        own_kafka.start()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_record_is_lost(run: FaultRun, scenario: str) -> None:
    """Run ``scenario`` and check its tally: nothing lost, nothing doubled where promised."""
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
