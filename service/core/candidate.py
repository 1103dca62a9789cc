"""A rollout's candidate scoring the rows of a batch beside the serving version.

Transport-free, used by :class:`service.core.scoring.Scorer` once the serving
version has scored a group. Shadow: the candidate scores every row too, and
its outputs go to the shadow topic. Canary: the rows whose key falls below
the fraction are the candidate's (stable per key, see
:func:`service.core.rollout.canary_share`). Whatever goes wrong with the
candidate (its predict call, its documents) is counted against it in the
comparison and never costs a record: the serving version's outputs stand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service.core.outputs import DeadLetter, InputRecord, Scored, scored_all
from service.core.registry import ServingModel
from service.core.rollout import Rollout, compare_outputs
from service.core.runtime.base import Outputs

__all__ = ["score_candidate"]

logger = logging.getLogger(__name__)

Predict = Callable[[ServingModel, np.ndarray], Outputs | None]
Render = Callable[[ServingModel, Outputs, list[Any]], list[bytes]]


def score_candidate(
    rollout: Rollout,
    model: ServingModel,
    batch: np.ndarray,
    outputs: Outputs,
    ids: list[Any],
    positions: list[int],
    records: Sequence[InputRecord],
    slots: list[Scored | DeadLetter | None],
    shadows: list[Scored],
    *,
    predict: Predict,
    render: Render,
    observer: Any,
) -> set[int]:
    """Score the candidate's rows (into ``shadows``, or ``slots`` for a canary); the rows
    (indexes into ``positions``) whose output is now the candidate's."""
    candidate = rollout.candidate
    assert candidate is not None
    shadow = rollout.stage == "shadow"
    if shadow:
        picked = list(range(len(positions)))
    else:
        picked = [
            j for j, i in enumerate(positions) if rollout.to_candidate(records[i].key, ids[j])
        ]
        if not picked:
            return set()
    rows = batch if shadow else batch[picked]
    figures = rollout.comparison
    got = predict(candidate, rows)
    picked_ids = [ids[j] for j in picked]
    try:
        docs = None if got is None else render(candidate, got, picked_ids)
    except Exception as exc:
        logger.warning(
            "candidate %s %s: outputs not written: %s", model.name, candidate.version, exc
        )
        docs = None
    if got is None or docs is None:  # the serving version's outputs stand for these rows
        figures.candidate_errors += len(picked)
        return set()
    figures.candidate_rows += len(picked)
    mine = outputs if shadow else {k: v[picked] for k, v in outputs.items()}
    sig = candidate.runtime.signature
    compare_outputs(model.runtime.signature, mine, sig, got, len(picked), figures)
    sources = [records[positions[j]] for j in picked]
    if observer is not None:
        observer.scored(candidate, rows, got, sources, picked_ids, True)
    if shadow:
        shadows.extend(scored_all(candidate, sources, docs, shadow=True))
        return set()
    for j, output in zip(picked, scored_all(candidate, sources, docs)):
        slots[positions[j]] = output
    return set(picked)
