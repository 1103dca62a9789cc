"""Short fault runs under at_least_once on a broker of this file's own: lost must be 0.

The checks are in :mod:`tests.e2e.faults_common`; the long runs (100,000 records
each) are ``scripts/faults.py``; see the README.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.faults import SCENARIOS, FaultRun
from scripts.localkafka import LocalKafka
from tests.e2e.faults_common import check_no_record_is_lost, fault_run

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def run(own_kafka: LocalKafka, tmp_path: Path, trained: dict[str, Path]) -> Iterator[FaultRun]:
    yield from fault_run(own_kafka, tmp_path, trained, "at_least_once")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_record_is_lost(run: FaultRun, scenario: str) -> None:
    check_no_record_is_lost(run, scenario)
