"""Live model quality: figures over labelled predictions, per model version.

Transport-free. :class:`Sums` adds labelled predictions up (accuracy, log
loss and Brier score for classifiers; mean absolute and root mean squared
error for regressors) and can be added to another, so per-partition books
total into a worker's view and workers' figures total into the fleet's.
:class:`QualityBook` keeps, per (model, version), the figures since the
version's first labelled record, over a sliding window (a ring of time
buckets) and over the version's first window (what alerts compare against).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["QualityBook", "Sums", "VersionQuality", "score_row"]

logger = logging.getLogger(__name__)

_EPS = 1e-15
_BUCKETS = 60  # a sliding window is this many buckets of window / 60 seconds


@dataclass(slots=True)
class Sums:
    """Running sums over labelled predictions of one version."""

    n: int = 0
    correct: int = 0
    probs: int = 0  # rows whose prediction had probabilities (log loss, Brier)
    log_loss: float = 0.0
    brier: float = 0.0
    abs_err: float = 0.0
    sq_err: float = 0.0
    regression: bool = False

    def add(self, other: Sums) -> None:
        self.n += other.n
        self.correct += other.correct
        self.probs += other.probs
        self.log_loss += other.log_loss
        self.brier += other.brier
        self.abs_err += other.abs_err
        self.sq_err += other.sq_err
        self.regression = self.regression or other.regression

    def plus(self, other: Sums) -> Sums:
        total = Sums()
        total.add(self)
        total.add(other)
        return total

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n and not self.regression else None

    @property
    def rmse(self) -> float | None:
        return math.sqrt(self.sq_err / self.n) if self.n and self.regression else None

    def figures(self) -> dict[str, Any]:
        """``labelled`` and the metrics of the kind: classifier or regressor."""

        def r(value: float | None) -> float | None:
            return round(value, 6) if value is not None else None

        if self.regression:
            mae = self.abs_err / self.n if self.n else None
            return {"labelled": self.n, "mae": r(mae), "rmse": r(self.rmse)}
        return {
            "labelled": self.n,
            "accuracy": r(self.accuracy),
            "log_loss": r(self.log_loss / self.probs) if self.probs else None,
            "brier": r(self.brier / self.probs) if self.probs else None,
        }

    def to_json(self) -> list[Any]:
        return [self.n, self.correct, self.probs, self.log_loss, self.brier, self.abs_err,
                self.sq_err, self.regression]  # fmt: skip

    @classmethod
    def from_json(cls, raw: list[Any]) -> Sums:
        n, correct, probs, log_loss, brier, abs_err, sq_err, regression = raw
        return cls(n, correct, probs, log_loss, brier, abs_err, sq_err, bool(regression))


def score_row(
    into: Sums,
    truth: Any,
    label: Any,
    probs: np.ndarray | None,
    class_index: dict[str, int] | None,
    value: float | None,
) -> bool:
    """Add one labelled prediction to ``into``; False when ``truth`` does not fit the model.

    A classifier's label and the true class compare as text (``1`` and ``"1"``
    agree); log loss and Brier use the probabilities when the prediction had
    them (a true class the model does not know has probability 0). A
    regressor's ``value`` is compared with ``truth`` as a number.
    """
    if value is not None:
        try:
            target = float(truth)
        except (TypeError, ValueError):
            return False
        if not math.isfinite(target):
            return False
        err = value - target
        into.n += 1
        into.abs_err += abs(err)
        into.sq_err += err * err
        into.regression = True
        return True
    if isinstance(truth, dict | list) or truth is None:
        return False
    text = str(truth)
    if isinstance(truth, float) and truth.is_integer():
        text = str(int(truth))
    into.n += 1
    into.correct += str(label) == text
    if probs is not None and class_index is not None:
        k = class_index.get(text)
        p = float(probs[k]) if k is not None else 0.0
        into.probs += 1
        into.log_loss -= math.log(max(p, _EPS))
        square = float(np.dot(probs, probs))  # sum_j p_j^2, then the true class's correction
        into.brier += square - 2 * p + 1 if k is not None else square + 1
    return True


@dataclass
class VersionQuality:
    """One version's figures: since it began, its first window, and a sliding window."""

    since: Sums = field(default_factory=Sums)
    first: Sums = field(default_factory=Sums)
    first_at: float | None = None  # when its first labelled prediction was joined
    ring: deque[tuple[int, Sums]] = field(default_factory=deque)  # (bucket index, sums)

    def add(self, sums: Sums, now: float, window: float) -> None:
        self.since.add(sums)
        if self.first_at is None:
            self.first_at = now
        if now < self.first_at + window:
            self.first.add(sums)
        bucket = int(now // (window / _BUCKETS))
        if self.ring and self.ring[-1][0] == bucket:
            self.ring[-1][1].add(sums)
        else:
            self.ring.append((bucket, Sums(regression=sums.regression)))
            self.ring[-1][1].add(sums)

    def windowed(self, now: float, window: float) -> Sums:
        oldest = int(now // (window / _BUCKETS)) - _BUCKETS + 1
        while self.ring and self.ring[0][0] < oldest:
            self.ring.popleft()
        total = Sums(regression=self.since.regression)
        for _, sums in self.ring:
            total.add(sums)
        return total


class QualityBook:
    """Quality per (model, version) of one partition's labelled predictions."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.versions: dict[tuple[str, str], VersionQuality] = {}
        self.changed = False

    def add(self, model: str, version: str, sums: Sums, now: float) -> None:
        book = self.versions.get((model, version))
        if book is None:
            book = self.versions[(model, version)] = VersionQuality()
        book.add(sums, now, self.window)
        self.changed = True

    def snapshot(self) -> list[list[Any]]:
        """What survives a restart beyond the changelog's retention: totals and first windows."""
        return [
            [model, version, q.since.to_json(), q.first.to_json(), q.first_at]
            for (model, version), q in self.versions.items()
        ]

    def restore(self, snapshot: list[list[Any]]) -> None:
        """Totals as of a snapshot; the events after it add to them (the ring is rebuilt)."""
        for model, version, since, first, first_at in snapshot:
            book = self.versions.setdefault((model, version), VersionQuality())
            book.since, book.first, book.first_at = (
                Sums.from_json(since),
                Sums.from_json(first),
                first_at,
            )

    @staticmethod
    def total(
        books: list[QualityBook], model: str, now: float
    ) -> dict[str, tuple[Sums, Sums, Sums]]:
        """Per version of ``model``: (window, since it began, first window), over ``books``."""
        found: dict[str, tuple[Sums, Sums, Sums]] = {}
        for book in books:
            for (name, version), q in book.versions.items():
                if name != model:
                    continue
                window, since, first = found.get(version, (Sums(), Sums(), Sums()))
                window.add(q.windowed(now, book.window))
                since.add(q.since)
                first.add(q.first)
                found[version] = (window, since, first)
        return found
