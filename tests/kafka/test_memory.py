"""The memory settings a full-rate worker applies once scoring begins (no broker)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Iterator

import pytest

from service.kafka import memory


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_and_collections_are_rarer(restored: None) -> None:
    survivor = [object() for _ in range(10)]  # alive when scoring begins: frozen with the rest
    memory.tune_memory()
    assert gc.get_threshold() == memory.THRESHOLDS
    assert gc.get_freeze_count() > len(survivor)


def test_glibc_accepts_the_heap_settings() -> None:
    """The settings are ones this C library takes (mallopt returns 1), not silently ignored."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        pytest.fail(f"{name} has no mallopt: the image is not glibc-based any more")
    assert libc.mallopt(memory._M_TRIM_THRESHOLD, memory.TRIM_THRESHOLD) == 1
    assert libc.mallopt(memory._M_TOP_PAD, memory.TOP_PAD) == 1
