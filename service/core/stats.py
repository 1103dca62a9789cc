"""Per-model scoring statistics: counts and latency min/mean/max/p99.

Kept in memory per model version and reset by a swap, so ``/models/{name}``
describes the version that is serving now.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LatencyStats"]

_WINDOW = 2048


@dataclass(slots=True)
class LatencyStats:
    """Running totals plus a ring of recent samples for the percentile."""

    records: int = 0
    calls: int = 0
    total_ms: float = 0.0
    min_ms: float = float("inf")
    max_ms: float = 0.0
    _ring: np.ndarray = field(default_factory=lambda: np.zeros(_WINDOW, dtype=np.float64))
    _next: int = 0

    def observe(self, call_ms: float, rows: int) -> None:
        """Record one predict call that scored ``rows`` records in ``call_ms``."""
        self.records += rows
        self.calls += 1
        self.total_ms += call_ms
        self.min_ms = min(self.min_ms, call_ms)
        self.max_ms = max(self.max_ms, call_ms)
        self._ring[self._next % _WINDOW] = call_ms
        self._next += 1

    def summary(self) -> dict[str, float | None]:
        if not self.calls:
            return {"min": None, "mean": None, "max": None, "p99": None}
        window = self._ring[: min(self._next, _WINDOW)]
        return {
            "min": round(self.min_ms, 4),
            "mean": round(self.total_ms / self.calls, 4),
            "max": round(self.max_ms, 4),
            "p99": round(float(np.percentile(window, 99)), 4),
        }
