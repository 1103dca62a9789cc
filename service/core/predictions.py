"""Predictions of one model version for records of one partition: what the label join holds.

A block is made per scoring call and partition (:func:`service.core.observe.blocks_of`)
and kept by :class:`service.core.labels.PartitionJoin` for the label window, in the
plain-tuple form of :meth:`PredictionBlock.held`, which the cycle collector stops
walking once it has seen it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.quality import Sums, score_row

__all__ = ["Held", "PredictionBlock", "score_held"]

_PREDICTION_BYTES = 120

# A block as the join holds it (see PredictionBlock.held): model, version, labels,
# probabilities, values, classes.
Held = tuple[
    str, str, "np.ndarray | None", "np.ndarray | None", "np.ndarray | None",
    "np.ndarray | None",
]  # fmt: skip


@functools.lru_cache(maxsize=256)
def _class_array(classes: tuple[str, ...]) -> np.ndarray:
    """The classes as held blocks keep them (see :meth:`PredictionBlock.held`), one
    read-only array shared by every block of these classes."""
    array = np.asarray(classes, dtype=str)
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=256)
def _class_index(classes: tuple[str, ...]) -> dict[str, int]:
    """Shared by every block of these classes (read only): one object less per block
    for the collector to walk while the join holds the block."""
    return {c: i for i, c in enumerate(classes)}


def _column(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """``values`` as a one-dimensional array of as many items, whatever they are (a ragged
    or nested list, from a changelog written by someone else, becomes an object array)."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged: numpy refuses to guess a shape
        array = np.empty(0)
    if array.ndim == 1 and len(array) == len(values):
        return array
    column = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        column[i] = value
    return column


@dataclass(slots=True)
class PredictionBlock:
    """Predictions of one model version for some records of one partition (one batch)."""

    model: str
    version: str
    at: float
    keys: Sequence[bytes | None]
    ids: Sequence[Any]
    labels: Sequence[Any] | np.ndarray | None = None  # an array once held
    probs: np.ndarray | None = None  # (rows, classes), for classifiers
    values: np.ndarray | None = None  # (rows,), for regressors
    classes: Sequence[str] | None = None
    class_index: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.classes is None and self.probs is not None:
            self.classes = tuple(str(i) for i in range(self.probs.shape[1]))
        elif self.classes is not None and type(self.classes) is not tuple:
            self.classes = tuple(self.classes)
        if self.classes is not None and self.class_index is None:
            self.class_index = _class_index(self.classes)  # type: ignore[arg-type]

    def held(self) -> Held:
        """What the join keeps of this block for the whole window, as one plain tuple.

        A collection stops tracking a plain tuple once it holds only values it never
        tracks: strings, numbers, arrays, and tuples already untracked. So the labels
        are an array, not a tuple of their own (a collection sees a tuple held only by
        this one after it, and this one stays tracked), so are the classes (one array
        per set of classes), and the class index (a dict, which always counts as
        tracked) is looked up again by :func:`score_held`. A block object and its
        lists stayed tracked: ~4 objects a block, millions at a full window, and every
        collection of the older generations walked them all (~0.2 s per 500,000).
        """
        labels = None if self.labels is None else _column(self.labels)
        classes = None if self.classes is None else _class_array(tuple(self.classes))
        return self.model, self.version, labels, self.probs, self.values, classes

    def row_bytes(self) -> int:
        width = self.probs.shape[1] if self.probs is not None else 1
        return _PREDICTION_BYTES + 8 * width


def score_held(held: Held, row: int, truth: Any, into: Sums) -> bool:
    """:meth:`PredictionBlock.score` of a held block (see ``score_row``)."""
    _, _, labels, probs, values, classes = held
    label = labels[row] if labels is not None else None
    index = _class_index(tuple(classes.tolist())) if classes is not None else None
    value = float(values[row]) if values is not None else None
    return score_row(into, truth, label, probs[row] if probs is not None else None, index, value)
