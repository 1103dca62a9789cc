"""Prometheus metrics on one explicit registry, created once per worker.

Label values are model names, versions and the stable reason codes of
:mod:`service.core.errors`, so dashboards and alerts can rely on them.

Every label value that comes from a message is bounded, so no producer can grow
the scrape: a model name is its own label only once that model has served on
this worker (:meth:`Metrics.model_label`; every other name shares ``_unknown``,
and names past ``max_model_labels`` share ``_other``), and only the newest
``versions_per_model`` versions of a model keep their own version label
(:meth:`Metrics.version_label`; older ones share ``_retired`` and their series
are dropped).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "EVICTED_KINDS",
    "LABEL_OUTCOMES",
    "OTHER_MODEL",
    "RETIRED_VERSION",
    "UNKNOWN_MODEL",
    "Metrics",
]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_E2E_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

UNKNOWN_MODEL = "_unknown"  # a name that never served on this worker
OTHER_MODEL = "_other"  # a name that served, past the max_model_labels cap
RETIRED_VERSION = "_retired"  # a version older than the newest versions_per_model
LABEL_OUTCOMES = ("matched", "duplicate", "late", "unmatched", "invalid")  # see core/labels.py
EVICTED_KINDS = ("label", "prediction", "joined")  # what an evicted join entry held


class Metrics:
    """All hotswap metrics; one instance per process, passed to whoever updates them."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_model_labels: int = 1000,
        versions_per_model: int = 4,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._max_model_labels = max_model_labels
        self._versions_per_model = versions_per_model
        self._versions: dict[str, deque[str]] = {}  # labelled model -> newest versions served
        self._overflow: set[str] = set()  # models that served past max_model_labels
        self._lock = threading.Lock()  # HTTP inference threads read labels too
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
        self.grpc_inferences = Counter(
            "hotswap_grpc_inference_rows",
            "Rows scored over gRPC (Open Inference Protocol v2).",
            ["model", "version"],
            registry=r,
        )
        self.ready = Gauge("hotswap_ready", "1 when the worker is ready to score.", registry=r)
        # --- the Kafka data path ---
        self.outputs_rerouted = Counter(
            "hotswap_outputs_rerouted",
            "Outputs the broker refused for good, sent to the dead-letter topic instead.",
            registry=r,
        )
        self.transactions = Counter(
            "hotswap_transactions",
            "exactly_once transactions, by outcome (committed, aborted).",
            ["outcome"],
            registry=r,
        )
        self.stalled = Gauge(
            "hotswap_stalled",
            "1 while the batch in flight makes no progress for HOTSWAP_STALL_TIMEOUT.",
            registry=r,
        )
        # --- rollouts ---
        self.records_shadowed = Counter(
            "hotswap_records_shadowed",
            "Records a shadow candidate scored (written to the shadow topic).",
            ["model", "version"],
            registry=r,
        )
        self.rollout_steps = Counter(
            "hotswap_rollout_steps",
            "Control messages applied, by stage (shadow, canary, promoted, aborted).",
            ["model", "stage"],
            registry=r,
        )
        self.control_rejections = Counter(
            "hotswap_control_rejections",
            "Control or status messages refused, by reason (a fixed set).",
            ["reason"],
            registry=r,
        )
        self.heartbeat_failures = Counter(
            "hotswap_heartbeat_failures",
            "Heartbeats this worker could not send to the status topic.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "hotswap_consumer_lag",
            "Records of this worker's partitions not read yet, per topic read (each route's).",
            ["topic"],
            registry=r,
        )

        # --- labels, quality, drift ---
        self.labels = Counter(
            "hotswap_labels",
            "Labels read, by outcome (matched, duplicate, late, unmatched, invalid).",
            ["outcome"],
            registry=r,
        )
        self.predictions_unlabelled = Counter(
            "hotswap_predictions_unlabelled",
            "Predictions no label joined within HOTSWAP_LABEL_WINDOW.",
            registry=r,
        )
        self.join_evicted = Counter(
            "hotswap_join_evicted",
            "Join state dropped to stay in HOTSWAP_LABEL_STATE_BYTES (label, prediction, joined).",
            ["kind"],
            registry=r,
        )
        # Fixed label sets start at 0, so a dashboard or an alert's rate() sees the series
        # from the first scrape rather than from the first label or eviction.
        for outcome in LABEL_OUTCOMES:
            self.labels.labels(outcome)
        for kind in EVICTED_KINDS:
            self.join_evicted.labels(kind)
        self.join_state_bytes = Gauge(
            "hotswap_join_state_bytes", "Estimated bytes of label-join state.", registry=r
        )
        self.model_quality = Gauge(
            "hotswap_model_quality",
            "Live quality over HOTSWAP_QUALITY_WINDOW (accuracy, log_loss, brier, mae, rmse, "
            "labelled) and over the version's first window (accuracy_first, rmse_first).",
            ["model", "version", "metric"],
            registry=r,
        )
        self.feature_drift = Gauge(
            "hotswap_feature_drift",
            "PSI of a feature over HOTSWAP_DRIFT_WINDOW records (the most drifted features).",
            ["model", "feature"],
            registry=r,
        )
        self.prediction_drift = Gauge(
            "hotswap_prediction_drift",
            "PSI of the predictions over HOTSWAP_DRIFT_WINDOW records.",
            ["model"],
            registry=r,
        )

    # --- bounded labels ----------------------------------------------------------

    def set_consumer_lag(self, by_topic: dict[str, int]) -> None:
        """``hotswap_consumer_lag`` for the topics held now (at most 100, as heartbeats list);
        a topic no longer held loses its series rather than keep its last figure."""
        self.consumer_lag.clear()
        for topic, lag in sorted(by_topic.items())[:100]:
            self.consumer_lag.labels(topic).set(lag)

    def model_label(self, name: str) -> str:
        """The ``model`` label for ``name``: itself if it has served here, else ``_unknown``.

        Use it for every ``model`` label whose value comes from a message, e.g.
        ``metrics.model_rejections.labels(metrics.model_label(name), reason)``.
        """
        if name in self._versions:
            return name
        return OTHER_MODEL if name in self._overflow else UNKNOWN_MODEL

    def version_label(self, name: str, version: str) -> str:
        """The ``version`` label: itself for one of the newest versions served, else ``_retired``.

        Use it for every ``version`` label, with :meth:`model_label` for the ``model`` one.
        """
        versions = self._versions.get(name)
        return version if versions is not None and version in versions else RETIRED_VERSION

    def _serve(self, model: str, version: str) -> None:
        with self._lock:
            versions = self._versions.get(model)
            if versions is None:
                if model in self._overflow:
                    return
                if len(self._versions) >= self._max_model_labels:
                    logger.warning(
                        "%d models have their own label: %s counts as %s",
                        self._max_model_labels,
                        model,
                        OTHER_MODEL,
                    )
                    self._overflow.add(model)
                    return
                versions = self._versions[model] = deque()
            if version in versions:
                return
            if len(versions) == self._versions_per_model:
                dropped = versions.popleft()
                families = (self.records_scored, self.records_shadowed, self.http_inferences)
                for family in (*families, self.grpc_inferences, self.model_info):
                    _remove(family, model, dropped)
            versions.append(version)

    # --- events -------------------------------------------------------------------

    def swapped(self, model: str, version: str, old_version: str | None) -> None:
        """``version`` of ``model`` now serves (``old_version`` did before)."""
        self._serve(model, version)
        label = self.model_label(model)
        if label == model:  # models past the label cap have no info series
            if old_version is not None and old_version != version:
                _remove(self.model_info, model, old_version)
            self.model_info.labels(model, version).set(1)
        self.model_swaps.labels(label).inc()

    def candidate(self, model: str, version: str) -> None:
        """``version`` of ``model`` scores as a rollout candidate: it gets its version label."""
        self._serve(model, version)

    def removed(self, model: str, version: str) -> None:
        """``model`` no longer serves (a tombstone)."""
        _remove(self.model_info, model, version)

    def rejected(self, model: str, reason: str) -> None:
        """A version of ``model`` was rejected with the stable code ``reason``."""
        self.model_rejections.labels(self.model_label(model), reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _remove(family: Counter | Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # no such series (never observed, or dropped already)
        family.remove(*labels)
