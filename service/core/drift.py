"""Drift: how far the records and predictions of the stream are from the training data's.

Transport-free. At publish, :func:`build_profile` turns reference rows (the
training data) and the model's predictions on them into a compact profile,
kept in the model message's metadata (``drift_profile``): per feature the
edges of 10 quantile bins and the share of reference rows in each; for the
predictions, the share per class (classifiers) or per quantile bin of the
value (regressors). A few kilobytes, not the rows.

On the worker, :class:`DriftMonitor` bins each scored batch with one
``np.searchsorted`` per feature, keeps the per-batch histograms in a ring
covering the last ``window`` records, and computes the population stability
index of each feature and of the predictions from the ring's totals:
PSI = sum of (actual - expected) * ln(actual / expected), shares floored at 1e-4.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.core.metrics import Metrics
from service.core.registry import ServingModel
from service.core.settings import Settings

__all__ = ["DriftMonitor", "Profile", "build_profile", "psi"]

logger = logging.getLogger(__name__)

BINS = 10
_FLOOR = 1e-4
_GAUGES_EVERY = 1.0  # seconds between gauge updates


def psi(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """PSI along the last axis of counts or shares (each row normalised first)."""
    a = actual / np.maximum(actual.sum(axis=-1, keepdims=True), 1)
    e = expected / np.maximum(expected.sum(axis=-1, keepdims=True), 1e-12)
    a, e = np.maximum(a, _FLOOR), np.maximum(e, _FLOOR)
    return np.sum((a - e) * np.log(a / e), axis=-1)  # type: ignore[no-any-return]


def _edges(column: np.ndarray) -> np.ndarray:
    """Inner edges of the quantile bins, in float32: the worker bins float32 rows, so the
    reference is binned in float32 too (a value on an edge falls on the same side)."""
    inner = np.quantile(column.astype(np.float64), np.linspace(0, 1, BINS + 1)[1:-1])
    return np.unique(inner.astype(np.float32))


def _shares(column: np.ndarray, edges: np.ndarray) -> list[float]:
    counts = np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)
    return [round(float(c), 6) for c in counts / max(1, len(column))]


def build_profile(
    rows: np.ndarray, names: list[str], labels: np.ndarray | None, values: np.ndarray | None
) -> dict[str, Any]:
    """The profile of reference ``rows`` (features in the model's order) and predictions."""
    rows = np.asarray(rows, dtype=np.float32)
    features = []
    for j, name in enumerate(names):
        edges = _edges(rows[:, j])
        features.append(
            {"name": name, "edges": edges.tolist(), "expected": _shares(rows[:, j], edges)}
        )
    prediction: dict[str, Any] | None = None
    if labels is not None:
        classes, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
        prediction = {
            "kind": "class",
            "classes": classes.tolist(),
            "expected": [round(float(c), 6) for c in counts / counts.sum()],
        }
    elif values is not None:
        column = np.asarray(values, dtype=np.float32).reshape(-1)
        edges = _edges(column)
        prediction = {"kind": "value", "edges": edges.tolist(), "expected": _shares(column, edges)}
    return {"rows": len(rows), "features": features, "prediction": prediction}


@dataclass
class Profile:
    """A profile parsed for binning: one edge array per feature, the expected shares."""

    names: list[str]
    edges: list[np.ndarray]
    expected: np.ndarray  # (features, BINS) padded with zeros
    prediction_kind: str | None
    prediction_edges: np.ndarray | None
    classes: dict[str, int]
    prediction_expected: np.ndarray | None
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.offsets = np.arange(len(self.edges), dtype=np.int64) * BINS  # feature j's bins

    def histogram(self, batch: np.ndarray) -> np.ndarray:
        """Counts per (feature, bin) of a float32 batch: one ``searchsorted`` per feature
        (a value's bin is the number of edges at or below it), one ``bincount`` in all."""
        columns = np.ascontiguousarray(batch.T)
        bins = np.empty(columns.shape, dtype=np.intp)
        for j, edges in enumerate(self.edges):
            bins[j] = np.searchsorted(edges, columns[j], side="right")
        bins += self.offsets[:, None]
        flat = np.bincount(bins.ravel(), minlength=len(self.edges) * BINS)
        return flat.reshape(len(self.edges), BINS).astype(np.float64)

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Profile:
        features = raw["features"]
        expected = np.zeros((len(features), BINS))
        for j, f in enumerate(features):
            expected[j, : len(f["expected"])] = f["expected"]
        pred = raw.get("prediction") or {}
        kind = pred.get("kind")
        return cls(
            names=[str(f["name"]) for f in features],
            edges=[np.asarray(f["edges"], dtype=np.float32) for f in features],
            expected=expected,
            prediction_kind=kind,
            prediction_edges=np.asarray(pred["edges"], dtype=np.float32)
            if kind == "value"
            else None,
            classes={str(c): i for i, c in enumerate(pred.get("classes", []))},
            prediction_expected=np.asarray(pred["expected"], dtype=np.float64) if kind else None,
        )


@dataclass
class _Window:
    """The ring of per-batch histograms of one model version, and their running totals."""

    version: str
    profile: Profile
    size: int
    ring: deque[tuple[int, np.ndarray, np.ndarray | None]] = field(default_factory=deque)
    rows: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, BINS)))
    predicted: np.ndarray | None = None

    def add(self, counts: np.ndarray, predicted: np.ndarray | None, rows: int) -> None:
        if self.rows == 0:
            self.counts = np.zeros_like(counts)
            self.predicted = None if predicted is None else np.zeros_like(predicted)
        self.ring.append((rows, counts, predicted))
        self.rows += rows
        self.counts += counts
        if predicted is not None and self.predicted is not None:
            self.predicted += predicted
        while self.ring and self.rows - self.ring[0][0] >= self.size:
            n, old, old_pred = self.ring.popleft()
            self.rows -= n
            self.counts -= old
            if old_pred is not None and self.predicted is not None:
                self.predicted -= old_pred


class DriftMonitor:
    """PSI per feature and of the predictions, over the last ``window`` records per model."""

    def __init__(self, metrics: Metrics | None, *, window: int, max_features: int) -> None:
        self._metrics = metrics
        self._window = window
        self._max = max_features
        self._models: dict[str, _Window] = {}
        self._parsed: dict[tuple[str, str], Profile | None] = {}
        self._gauged: dict[str, set[str]] = {}
        self._last_gauges = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> DriftMonitor:
        return cls(metrics, window=settings.drift_window, max_features=settings.drift_max_features)

    def _profile(self, model: ServingModel) -> Profile | None:
        key = (model.name, model.version)
        if key not in self._parsed:
            raw = model.message.metadata.get("drift_profile")
            try:
                self._parsed[key] = Profile.parse(raw) if isinstance(raw, dict) else None
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("drift profile of %s %s unusable: %s", *key, exc)
                self._parsed[key] = None
        return self._parsed[key]

    def watch(self, model: ServingModel, batch: np.ndarray, outputs: dict[str, Any]) -> None:
        """Add one scored batch of the serving version (vectorised: one searchsorted a feature)."""
        profile = self._profile(model)
        if profile is None or batch.ndim != 2 or batch.shape[1] != len(profile.edges):
            return
        window = self._models.get(model.name)
        if window is None or window.version != model.version:
            window = self._models[model.name] = _Window(model.version, profile, self._window)
        counts = profile.histogram(batch)
        window.add(counts, self._predicted(model, profile, outputs, len(batch)), len(batch))
        now = time.monotonic()
        if self._metrics is not None and now - self._last_gauges >= _GAUGES_EVERY:
            self._last_gauges = now
            self._gauge(model.name)

    @staticmethod
    def _predicted(
        model: ServingModel, profile: Profile, outputs: dict[str, Any], rows: int
    ) -> np.ndarray | None:
        if profile.prediction_expected is None:
            return None
        sig = model.runtime.signature
        if profile.prediction_kind == "class" and sig.label_output in outputs:
            labels = np.asarray(outputs[sig.label_output]).reshape(rows, -1)[:, 0]
            found, counts = np.unique(labels, return_counts=True)  # a few classes: then as text
            out = np.zeros(len(profile.prediction_expected) + 1)  # last: a class not in the profile
            for label, n in zip(found.tolist(), counts.tolist()):
                out[profile.classes.get(str(label), len(out) - 1)] += n
            return out
        if profile.prediction_kind == "value" and profile.prediction_edges is not None:
            for value in outputs.values():
                array = np.asarray(value)
                if array.dtype.kind in "fiu" and array.size >= rows:
                    idx = np.searchsorted(
                        profile.prediction_edges, array.reshape(rows, -1)[:, 0], side="right"
                    )
                    return np.bincount(idx, minlength=len(profile.prediction_expected)).astype(
                        np.float64
                    )
        return None

    def view(self, name: str) -> dict[str, Any] | None:
        """``GET /models/{name}/drift``; None when the serving version has no profile."""
        window = self._models.get(name)
        if window is None:
            return None
        features = psi(window.counts, window.profile.expected) if window.rows else None
        prediction = None
        if window.predicted is not None and window.profile.prediction_expected is not None:
            expected = np.append(window.profile.prediction_expected, 0.0)
            expected = expected[: len(window.predicted)]
            prediction = round(float(psi(window.predicted, expected)), 6) if window.rows else None
        return {
            "model": name,
            "version": window.version,
            "window": window.rows,
            "features": [
                {"name": n, "psi": round(float(features[j]), 6) if features is not None else None}
                for j, n in enumerate(window.profile.names)
            ],
            "prediction": {"psi": prediction},
        }

    def _gauge(self, name: str) -> None:
        metrics = self._metrics
        view = self.view(name)
        if metrics is None or view is None or metrics.model_label(name) != name:
            return
        ranked = sorted(
            (f for f in view["features"] if f["psi"] is not None), key=lambda f: -f["psi"]
        )[: self._max]
        shown = {f["name"] for f in ranked}
        for gone in self._gauged.get(name, set()) - shown:
            metrics.feature_drift.remove(name, gone)
        self._gauged[name] = shown
        for f in ranked:
            metrics.feature_drift.labels(name, f["name"]).set(f["psi"])
        if view["prediction"]["psi"] is not None:
            metrics.prediction_drift.labels(name).set(view["prediction"]["psi"])
