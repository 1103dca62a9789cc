"""What the scorer hands over after each predict call, for quality and drift.

Transport-free. The scorer calls :meth:`Observer.scored` once per predict
call that succeeded (the serving version on its rows, a rollout candidate on
its own) with the feature batch, the outputs as arrays and the source
records. The observer splits the predictions by source partition into
:class:`~service.core.labels.PredictionBlock` objects for the label join, and
passes the serving version's batch to drift monitoring. It costs a few array
slices and list builds per batch, never a per-record JSON decode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from service.core.outputs import InputRecord
from service.core.predictions import PredictionBlock
from service.core.registry import ServingModel

__all__ = ["BatchWatcher", "Observer", "blocks_of"]

logger = logging.getLogger(__name__)

Sink = Callable[[int, PredictionBlock], None]


class BatchWatcher(Protocol):
    """Drift monitoring: the serving version's features and outputs of one batch."""

    def watch(self, model: ServingModel, batch: np.ndarray, outputs: dict[str, Any]) -> None: ...


def blocks_of(
    model: ServingModel,
    outputs: dict[str, Any],
    sources: Sequence[InputRecord],
    ids: Sequence[Any],
    at: float,
) -> list[tuple[int, PredictionBlock]]:
    """The predictions of one call, one block per source partition."""
    rows = len(sources)
    if not rows:
        return []
    sig = model.runtime.signature
    labels = probs = values = None
    if sig.label_output and sig.label_output in outputs:
        labels = np.asarray(outputs[sig.label_output]).reshape(rows, -1)[:, 0]
        if sig.probability_output and sig.probability_output in outputs:
            probs = np.asarray(outputs[sig.probability_output], dtype=np.float64).reshape(rows, -1)
    else:
        for value in outputs.values():
            array = np.asarray(value)
            if array.dtype.kind in "fiu" and array.size >= rows:
                values = array.reshape(rows, -1)[:, 0].astype(np.float64)
                break
        if values is None:
            return []
    classes = tuple(str(c) for c in sig.classes) if sig.classes else None
    if probs is not None and classes is not None and len(classes) != probs.shape[1]:
        classes = None
    where = [s.partition for s in sources]
    first = where[0]
    if where.count(first) == rows:
        parts: list[tuple[int, list[int] | None]] = [(first, None)]
    else:
        spread = np.asarray(where)
        parts = [(int(p), np.flatnonzero(spread == p).tolist()) for p in np.unique(spread)]
    blocks = []
    for partition, idx in parts:
        if idx is None:
            keys, wanted = [s.key for s in sources], list(ids)
        else:
            keys, wanted = [sources[i].key for i in idx], [ids[i] for i in idx]

        def pick(a: np.ndarray, idx: list[int] | None = idx) -> np.ndarray:
            return a if idx is None else a[idx]

        block = PredictionBlock(
            model.name,
            model.version,
            at,
            keys,
            wanted,
            labels=pick(labels).tolist() if labels is not None else None,
            probs=pick(probs) if probs is not None else None,
            values=pick(values) if values is not None else None,
            classes=classes,
        )
        blocks.append((partition, block))
    return blocks


class Observer:
    """Hands each successful predict call to the label join and to drift monitoring."""

    def __init__(self, sink: Sink | None = None, drift: BatchWatcher | None = None) -> None:
        self.sink = sink
        self.drift = drift

    def scored(
        self,
        model: ServingModel,
        batch: np.ndarray,
        outputs: dict[str, Any],
        sources: Sequence[InputRecord],
        ids: Sequence[Any],
        candidate: bool = False,
    ) -> None:
        """Never raises: quality and drift must not stop the scoring of a batch."""
        try:
            if self.sink is not None:
                for partition, block in blocks_of(model, outputs, sources, ids, time.time()):
                    self.sink(partition, block)
            if self.drift is not None and not candidate:
                self.drift.watch(model, batch, outputs)
        except Exception:
            logger.exception("observing a batch of %s %s failed", model.name, model.version)
