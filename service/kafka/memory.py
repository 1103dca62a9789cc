"""How a worker that scores at full rate manages memory: the collector and the allocator.

Both settings were found with a profiler on the scoring loop (a batch of wine
records scored again and again, ``bench/profile.py`` for the whole worker):

- **The cycle collector.** Scoring allocates a few short-lived containers per
  record, almost never in cycles (reference counting frees them), yet each
  counts towards CPython's thresholds: at the default 700 a batch triggers
  several young collections, and now and then a full one walks every
  long-lived object of Faust, pydantic, FastAPI and the models. 195k records/s
  with the defaults, 329k with the thresholds below (batches of 500).
- **glibc's heap trimming.** ``orjson.dumps`` builds each document in a buffer
  it frees at once; freed at the top of the heap, that memory is handed back
  to the kernel every time (``M_TRIM_THRESHOLD``, 128 KiB), and the next call
  asks for it again. One scored document cost ~1.0 µs that way and ~0.18 µs
  once the heap keeps a few MiB of slack (``M_TOP_PAD``) and trims only above
  64 MiB of free memory at its top. Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

__all__ = ["THRESHOLDS", "TOP_PAD", "TRIM_THRESHOLD", "tune_memory"]

logger = logging.getLogger(__name__)

THRESHOLDS = (50_000, 20, 100)
TOP_PAD = 16 * 1024 * 1024  # bytes the heap grows by beyond a request, kept when freed
TRIM_THRESHOLD = 64 * 1024 * 1024  # free bytes at the heap top before they go back
_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2  # glibc's mallopt parameters (malloc.h)


def tune_memory() -> None:
    """Called once, when the models are replayed and scoring begins.

    The objects alive then live until exit, so the collector is told never to
    walk them again (``gc.freeze``), and collects less often from then on.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    _keep_heap_slack()


def _keep_heap_slack() -> None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        logger.debug("no mallopt in %s: the C allocator keeps its defaults", name)
        return
    if not (mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(_M_TOP_PAD, TOP_PAD)):
        logger.debug("mallopt refused: the C allocator keeps its defaults")
