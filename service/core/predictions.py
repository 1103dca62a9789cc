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
def _class_set(classes: tuple[str, ...]) -> tuple[np.ndarray, dict[str, int]]:
    """The classes as held blocks keep them (see :meth:`PredictionBlock.held`) and their
    index, shared by every block of these classes (read only): hashed once per block."""
    array = _column(classes)
    array.flags.writeable = False
    index = {c: i for i, c in enumerate(classes)}
    _remember(array, index)
    return array, index


def _column(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """``values`` as a one-dimensional array of the very same Python objects.

    An object array, not ``np.asarray``: that one would make text a fixed-width array
    (rows x the longest label x 4 bytes: a changelog event with one 20,000-character
    label in 2,000 rows held 160 MB), turn a ragged list into an error and equal-length
    lists into a matrix, and change what a label says (``[True, 2]``, ``2**63``). The
    array holds references, as the list did, and is never tracked by the collector.
    """
    return np.fromiter(values, dtype=object, count=len(values))


_INDEXES: dict[int, tuple[np.ndarray, dict[Any, int]]] = {}  # id(classes) -> both


def _index_of(classes: np.ndarray) -> dict[Any, int]:
    """The class index of a held block's classes (one array per set, :func:`_class_set`),
    looked up by identity: no tuple of every class rebuilt and hashed per label."""
    hit = _INDEXES.get(id(classes))
    if hit is not None and hit[0] is classes:  # the entry keeps its array alive: no id reuse
        return hit[1]
    index = {c: i for i, c in enumerate(classes.tolist())}
    _remember(classes, index)
    return index


def _remember(classes: np.ndarray, index: dict[Any, int]) -> None:
    """At most 256 sets (a changelog may name any number): the oldest is dropped, and
    found again from its array if a held block still asks for it."""
    if len(_INDEXES) >= 256:
        del _INDEXES[next(iter(_INDEXES))]
    _INDEXES[id(classes)] = (classes, index)


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
    class_array: np.ndarray | None = None  # the classes as held

    def __post_init__(self) -> None:
        if self.classes is None and self.probs is not None:
            self.classes = tuple(str(i) for i in range(self.probs.shape[1]))
        elif self.classes is not None and type(self.classes) is not tuple:
            self.classes = tuple(self.classes)
        if self.classes is not None:
            self.class_array, self.class_index = _class_set(self.classes)  # type: ignore[arg-type]

    def held(self) -> Held:
        """What the join keeps of this block for the whole window, as one plain tuple.

        A collection stops tracking a plain tuple once it holds only values it never
        tracks: strings, numbers, arrays, and tuples already untracked. So the labels
        are an object array (:func:`_column`), not a tuple of their own (a collection
        sees a tuple held only by this one after it, and this one stays tracked), so are
        the classes (one array per set of classes), and the class index (a dict, which
        always counts as tracked) is looked up by :func:`score_held`. A block object and its
        lists stayed tracked: ~4 objects a block, millions at a full window, and every
        collection of the older generations walked them all (~0.2 s per 500,000).
        """
        labels = None if self.labels is None else _column(self.labels)
        return self.model, self.version, labels, self.probs, self.values, self.class_array

    def row_bytes(self) -> int:
        width = self.probs.shape[1] if self.probs is not None else 1
        return _PREDICTION_BYTES + 8 * width


def score_held(held: Held, row: int, truth: Any, into: Sums) -> bool:
    """:meth:`PredictionBlock.score` of a held block (see ``score_row``)."""
    _, _, labels, probs, values, classes = held
    label = labels[row] if labels is not None else None
    index = _index_of(classes) if classes is not None else None
    value = float(values[row]) if values is not None else None
    return score_row(into, truth, label, probs[row] if probs is not None else None, index, value)
