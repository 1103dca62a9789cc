"""Short fault runs under at_least_once on a broker of this file's own: lost must be 0.

The test and its ``run`` are in :mod:`tests.e2e.faults_common` (one file per guarantee,
so the two run on two pytest-xdist workers); the long runs are ``scripts/faults.py``.
"""

from __future__ import annotations

import pytest

from tests.e2e.faults_common import run, test_no_record_is_lost

__all__ = ["run", "test_no_record_is_lost"]  # collected here, with this file's guarantee

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
def guarantee() -> str:
    return "at_least_once"
