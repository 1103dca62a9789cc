"""Moved to :mod:`scripts.harness` (shared with the fault report and benchmarks)."""

from scripts.harness import *  # noqa: F403
from scripts.harness import __all__ as __all__
