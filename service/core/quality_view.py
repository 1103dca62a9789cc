"""Quality as people and Prometheus read it: the ``/quality`` document and the gauges.

Transport-free: it totals the quality books of the partitions a worker holds
(see :class:`~service.core.quality.QualityBook`) per model version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from service.core.metrics import Metrics
from service.core.quality import QualityBook

__all__ = ["quality_report", "update_quality_gauges"]

logger = logging.getLogger(__name__)


def quality_report(books: Sequence[QualityBook], model: str, now: float) -> dict[str, Any]:
    """``GET /models/{name}/quality``: per version, the sliding window's figures first."""
    window = books[0].window if books else None
    versions = []
    for version, (windowed, since, first) in sorted(
        QualityBook.total(list(books), model, now).items()
    ):
        versions.append(
            {
                "version": version,
                **windowed.figures(),
                "since_began": since.figures(),
                "first_window": first.figures(),
            }
        )
    return {"model": model, "window_seconds": window, "versions": versions}


def _models(books: Iterable[QualityBook]) -> set[str]:
    return {model for book in books for model, _ in book.versions}


def update_quality_gauges(metrics: Metrics, books: Sequence[QualityBook], now: float) -> None:
    """Set ``hotswap_model_quality`` for the versions that have their own labels.

    Only models that served here and their newest versions get series (see
    :meth:`Metrics.model_label`), so the series stay bounded; the family is
    rebuilt on each call, which drops versions that retired.
    """
    metrics.model_quality.clear()
    for model in _models(books):
        if metrics.model_label(model) != model:
            continue
        for version, (windowed, _, first) in QualityBook.total(list(books), model, now).items():
            if metrics.version_label(model, version) != version:
                continue
            figures = windowed.figures()
            first_figures = first.figures()
            for name in ("accuracy", "rmse"):
                if first_figures.get(name) is not None:
                    figures[f"{name}_first"] = first_figures[name]
            for metric, value in figures.items():
                if value is not None:
                    metrics.model_quality.labels(model, version, metric).set(value)
