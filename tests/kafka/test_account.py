"""What a delivered batch adds to the metrics: end-to-end latency only for real timestamps.

A producer may set any timestamp (a backfill keeps 1970's, a mirror next year's); one record
stamped 1 moved the latency histogram's sum by 1.8e9 s and fell in ``+Inf``.
"""

from __future__ import annotations

import time

from service.core.metrics import Metrics
from service.core.outputs import InputRecord, Scored
from service.kafka.batch import account


def _scored(timestamp: float) -> Scored:
    source = InputRecord(b"k", b"{}", "records", 0, 0, timestamp)
    return Scored(b"k", b"{}", [], "wine", "1", source)


def _latency(metrics: Metrics, sample: str) -> float | None:
    return metrics.registry.get_sample_value(
        f"hotswap_end_to_end_latency_seconds_{sample}", {"model": "wine"}
    )


def test_only_timestamps_within_retention_are_latencies() -> None:
    metrics = Metrics()
    metrics.swapped("wine", "1", None)  # serving here: its own label
    now = time.time()
    stamps = [now - 0.5, now + 0.2, 1.0, now + 365 * 86400, now - 30 * 86400]
    account(metrics, [_scored(t) for t in stamps])
    assert _latency(metrics, "count") == 2  # half a second ago, and a clock slightly ahead
    total = _latency(metrics, "sum")
    assert total is not None
    assert 0.4 < total < 1e6  # and not the 1.8e9 s of the record stamped 1
    assert metrics.registry.get_sample_value(
        "hotswap_records_scored_total", {"model": "wine", "version": "1"}
    ) == len(stamps)  # every one of them is still counted as scored
