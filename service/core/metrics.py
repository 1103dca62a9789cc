"""Prometheus metrics on one explicit registry, created once per worker.

Label values are model names, versions and the stable reason codes of
:mod:`service.core.errors`, so dashboards and alerts can rely on them.
"""

from __future__ import annotations

import logging

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_E2E_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """All hotswap metrics; one instance per process, passed to whoever updates them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_scored = Counter(
            "hotswap_records_scored", "Records scored.", ["model", "version"], registry=r
        )
        self.records_dead_lettered = Counter(
            "hotswap_records_dead_lettered",
            "Records sent to the dead-letter topic.",
            ["reason"],
            registry=r,
        )
        self.scoring_latency = Histogram(
            "hotswap_scoring_latency_seconds",
            "Duration of one predict call (one per model per micro-batch).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "hotswap_end_to_end_latency_seconds",
            "From the input record's Kafka timestamp to its scored record being sent.",
            ["model"],
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "hotswap_batch_size",
            "Records per micro-batch.",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.model_swaps = Counter(
            "hotswap_model_swaps", "Model versions swapped in.", ["model"], registry=r
        )
        self.model_rejections = Counter(
            "hotswap_model_rejections",
            "Model versions rejected.",
            ["model", "reason"],
            registry=r,
        )
        self.model_load_seconds = Histogram(
            "hotswap_model_load_seconds",
            "Fetch, load, check and warm-up time of accepted versions.",
            ["model"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.model_info = Gauge(
            "hotswap_model_info",
            "1 for the version serving for each model.",
            ["model", "version"],
            registry=r,
        )
        self.http_inferences = Counter(
            "hotswap_http_inference_rows",
            "Rows scored over HTTP (Open Inference Protocol v2).",
            ["model", "version"],
            registry=r,
        )
        self.ready = Gauge("hotswap_ready", "1 when the worker is ready to score.", registry=r)

    def swapped(self, model: str, version: str, old_version: str | None) -> None:
        if old_version is not None and old_version != version:
            self.model_info.remove(model, old_version)
        self.model_info.labels(model, version).set(1)
        self.model_swaps.labels(model).inc()

    def removed(self, model: str, version: str) -> None:
        self.model_info.remove(model, version)

    def render(self) -> bytes:
        return generate_latest(self.registry)
