"""Rollouts judged by the truth: both versions' quality on the same labelled records.

Transport-free. When a label joins a record that the serving version and a
rollout's candidate both scored (see :class:`~service.core.labels.PartitionJoin`),
:func:`pair_recorder` adds each version's figures to the rollout's comparison;
:class:`TruthFigures` travels in heartbeats and totals across the fleet like
the agreement figures; :func:`judge` applies ``--min-labels`` and
``--max-quality-loss`` (accuracy for classifiers, RMSE for regressors).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.core.quality import Sums
from service.core.registry import ModelRegistry

__all__ = ["TruthFigures", "judge", "pair_recorder"]

logger = logging.getLogger(__name__)


class TruthFigures(BaseModel):
    """Sums of both versions over the labelled records both scored."""

    model_config = ConfigDict(extra="ignore")

    labelled: int = 0
    serving: list[Any] = Field(default_factory=lambda: Sums().to_json())
    candidate: list[Any] = Field(default_factory=lambda: Sums().to_json())

    @field_validator("serving", "candidate")
    @classmethod
    def _sums(cls, raw: list[Any]) -> list[Any]:
        """What :meth:`Sums.to_json` writes, or refused: heartbeats come from other hosts, and a
        junk figure must fail here, as a refused heartbeat, never later in the decider."""
        counts, totals, flag = raw[:3], raw[3:7], raw[7:]
        if len(raw) != 8 or not isinstance(flag[0], bool):
            raise ValueError("sums are [n, correct, probs, log_loss, brier, abs, sq, regression]")
        if any(type(c) is not int or c < 0 for c in counts) or any(
            type(t) not in (int, float) or not math.isfinite(t) or t < 0 for t in totals
        ):
            raise ValueError("sums hold non-negative counts and finite non-negative totals")
        return raw

    @classmethod
    def of(cls, serving: Sums, candidate: Sums) -> TruthFigures:
        return cls(labelled=candidate.n, serving=serving.to_json(), candidate=candidate.to_json())

    def sums(self) -> tuple[Sums, Sums]:
        return Sums.from_json(self.serving), Sums.from_json(self.candidate)

    def plus(self, other: TruthFigures | None) -> TruthFigures:
        if other is None:
            return self
        (s1, c1), (s2, c2) = self.sums(), other.sums()
        return TruthFigures.of(s1.plus(s2), c1.plus(c2))

    def report(self) -> dict[str, Any]:
        serving, candidate = self.sums()
        return {
            "labelled": self.labelled,
            "serving": serving.figures(),
            "candidate": candidate.figures(),
        }


def judge(min_labels: int, max_loss: float, truth: TruthFigures | None) -> tuple[bool, str] | None:
    """(worse, facts) once ``min_labels`` records both scored are labelled; None: not yet.

    Worse means the candidate's accuracy is below the serving version's by more
    than ``max_loss`` (classifiers), or its RMSE above it by more (regressors).
    """
    if truth is None or truth.labelled < min_labels:
        return None
    serving, candidate = truth.sums()
    if serving.regression or candidate.regression:
        s, c = serving.rmse, candidate.rmse
        loss, name = (c - s if s is not None and c is not None else None), "rmse"
    else:
        s, c = serving.accuracy, candidate.accuracy
        loss, name = (s - c if s is not None and c is not None else None), "accuracy"
    shown = "n/a" if s is None or c is None else f"serving {s:.4f}, candidate {c:.4f}"
    facts = f"{name} on {truth.labelled} labelled records: {shown} (max loss {max_loss})"
    return (loss is None or loss > max_loss), facts


def pair_recorder(registry: ModelRegistry) -> Callable[[str, dict[str, Sums]], None]:
    """The join's ``on_pair``: a labelled record both rollout versions scored."""

    def record(model: str, versions: dict[str, Sums]) -> None:
        rollout = registry.rollout(model)
        serving = registry.get(model)
        if rollout is None or rollout.ended is not None or serving is None:
            return
        candidate = rollout.candidate_version
        if candidate is None or candidate not in versions or serving.version not in versions:
            return
        rollout.comparison.truth_serving.add(versions[serving.version])
        rollout.comparison.truth_candidate.add(versions[candidate])

    return record
