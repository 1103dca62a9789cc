"""Per-model latency statistics and the Prometheus metrics."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.core.metrics import Metrics
from service.core.stats import LatencyStats


def test_empty_summary() -> None:
    stats = LatencyStats()
    assert stats.summary() == {"min": None, "mean": None, "max": None, "p99": None}
    assert (stats.records, stats.calls) == (0, 0)


def test_summary() -> None:
    stats = LatencyStats()
    for ms, rows in [(1.0, 10), (2.0, 20), (6.0, 5)]:
        stats.observe(ms, rows)
    assert (stats.records, stats.calls) == (35, 3)
    summary = stats.summary()
    assert (summary["min"], summary["mean"], summary["max"]) == (1.0, 3.0, 6.0)
    assert summary["p99"] == pytest.approx(float(np.percentile([1.0, 2.0, 6.0], 99)), abs=1e-4)
    assert summary["p99"] == pytest.approx(5.92, abs=1e-4)


def test_summary_rounds_to_four_places() -> None:
    stats = LatencyStats()
    stats.observe(0.123456789, 1)
    assert stats.summary()["min"] == 0.1235


def test_p99_uses_recent_window_but_totals_cover_everything() -> None:
    stats = LatencyStats()
    for _ in range(1000):
        stats.observe(500.0, 1)
    for _ in range(2048):
        stats.observe(1.0, 1)
    summary = stats.summary()
    assert summary["p99"] == 1.0  # the slow calls have left the window
    assert summary["max"] == 500.0
    assert summary["min"] == 1.0
    assert summary["mean"] == pytest.approx((1000 * 500 + 2048) / 3048, abs=1e-4)
    assert stats.calls == 3048


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_swapped_moves_model_info_to_new_version() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.swapped("wine", "1", None)
    text = metrics.render().decode()
    assert 'hotswap_model_info{model="wine",version="1"} 1.0' in text

    metrics.swapped("wine", "2", "1")
    text = metrics.render().decode()
    assert 'hotswap_model_info{model="wine",version="2"} 1.0' in text
    assert 'version="1"' not in text
    assert _sample(metrics, "hotswap_model_info", {"model": "wine", "version": "1"}) is None
    assert _sample(metrics, "hotswap_model_swaps_total", {"model": "wine"}) == 2.0


def test_swapped_to_same_version_keeps_it() -> None:
    metrics = Metrics()
    metrics.swapped("wine", "1", None)
    metrics.swapped("wine", "1", "1")
    assert _sample(metrics, "hotswap_model_info", {"model": "wine", "version": "1"}) == 1.0


def test_swaps_of_other_models_are_independent() -> None:
    metrics = Metrics()
    metrics.swapped("wine", "1", None)
    metrics.swapped("iris", "a", None)
    metrics.swapped("iris", "b", "a")
    assert _sample(metrics, "hotswap_model_info", {"model": "wine", "version": "1"}) == 1.0
    assert _sample(metrics, "hotswap_model_info", {"model": "iris", "version": "b"}) == 1.0
    assert _sample(metrics, "hotswap_model_info", {"model": "iris", "version": "a"}) is None


def test_removed() -> None:
    metrics = Metrics()
    metrics.swapped("wine", "3", None)
    metrics.removed("wine", "3")
    assert "hotswap_model_info{" not in metrics.render().decode()


def test_documented_metric_names() -> None:
    metrics = Metrics()
    metrics.records_scored.labels("wine", "1").inc(5)
    metrics.records_dead_lettered.labels("invalid_json").inc()
    metrics.model_rejections.labels("wine", "warmup_failed").inc()
    metrics.ready.set(1)
    text = metrics.render().decode()
    for name in [
        'hotswap_records_scored_total{model="wine",version="1"} 5.0',
        'hotswap_records_dead_lettered_total{reason="invalid_json"} 1.0',
        'hotswap_model_rejections_total{model="wine",reason="warmup_failed"} 1.0',
        "hotswap_ready 1.0",
        "# TYPE hotswap_scoring_latency_seconds histogram",
        "# TYPE hotswap_end_to_end_latency_seconds histogram",
        "# TYPE hotswap_batch_size histogram",
        "# TYPE hotswap_model_load_seconds histogram",
    ]:
        assert name in text


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.ready.set(1)
    assert second.registry.get_sample_value("hotswap_ready") == 0.0
