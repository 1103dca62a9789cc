"""A rollout in progress: the candidate, how records are routed to it, how it compares.

Transport-free. :func:`canary_share` places a record key on [0, 1) with a
stable hash (BLAKE2b, never Python's salted ``hash()``), so a key goes to the
same version on every worker and after every restart. :class:`Comparison`
accumulates, over the rows both versions scored, label agreement and the mean
absolute difference of their outputs; the live rollout and ``hotswap
backtest`` use the same code. :func:`evaluate` applies an automatic-promotion
policy to those figures.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from service.core.quality import Sums
from service.core.registry import ServingModel
from service.core.rollout_messages import ControlMessage, RolloutFigures, RolloutPolicy
from service.core.runtime import Signature
from service.core.runtime.base import Outputs
from service.core.truth import TruthFigures, judge

__all__ = [
    "PROMOTION_GRACE",
    "Comparison",
    "Decision",
    "Rollout",
    "canary_share",
    "compare_outputs",
    "evaluate",
]

logger = logging.getLogger(__name__)

_SCALE = float(2**64)
PROMOTION_GRACE = 30.0  # seconds a promoted candidate takes every record while its swap lands


def canary_share(key: bytes) -> float:
    """Where ``key`` falls on [0, 1): the same for a key everywhere, for ever."""
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def _routing_key(key: bytes | None, record_id: Any) -> bytes:
    """The record key; without one, the record id (``str`` of it)."""
    return key if key is not None else str(record_id).encode()


@dataclass(slots=True)
class Comparison:
    """Running figures of one rollout on this worker."""

    compared: int = 0
    agreed: int = 0
    labelled: int = 0
    abs_diff_sum: float = 0.0
    candidate_rows: int = 0
    candidate_errors: int = 0
    truth_serving: Sums = field(default_factory=Sums)  # labelled records both scored
    truth_candidate: Sums = field(default_factory=Sums)

    def figures(
        self, serving: ServingModel | None, candidate: ServingModel | None
    ) -> RolloutFigures:
        def p99(model: ServingModel | None) -> float | None:
            return model.stats.summary()["p99"] if model is not None else None

        return RolloutFigures(
            compared=self.compared,
            agreed=self.agreed,
            labelled=self.labelled,
            abs_diff_sum=self.abs_diff_sum,
            candidate_rows=self.candidate_rows,
            candidate_errors=self.candidate_errors,
            candidate_p99_ms=p99(candidate),
            serving_p99_ms=p99(serving),
            truth=TruthFigures.of(self.truth_serving, self.truth_candidate)
            if self.truth_candidate.n
            else None,
        )


def _labels(signature: Signature, outputs: Outputs, rows: int) -> np.ndarray | None:
    if signature.label_output is None or signature.label_output not in outputs:
        return None
    return np.asarray(outputs[signature.label_output]).reshape(rows, -1)[:, 0]


def _numeric(signature: Signature, outputs: Outputs, rows: int) -> dict[str, np.ndarray]:
    """Every numeric output but the label, as ``(rows, k)`` float64 arrays."""
    found: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        array = np.asarray(value)
        if name == signature.label_output or array.dtype.kind not in "fiub":
            continue
        found[name] = array.reshape(rows, -1).astype(np.float64)
    return found


def compare_outputs(
    serving: Signature,
    serving_out: Outputs,
    candidate: Signature,
    candidate_out: Outputs,
    rows: int,
    into: Comparison,
) -> None:
    """Add ``rows`` rows scored by both versions to ``into``.

    Agreement compares labels (as text, so ``1`` and ``"1"`` agree). The
    difference is the mean over a row of ``|serving - candidate|`` of the
    probabilities when both have them, else of the outputs both have with the
    same name and shape (e.g. a regressor's value); rows without any such
    output add 0.
    """
    into.compared += rows
    a, b = _labels(serving, serving_out, rows), _labels(candidate, candidate_out, rows)
    if a is not None and b is not None:
        same = a == b if a.dtype.kind == b.dtype.kind != "O" else a.astype(str) == b.astype(str)
        into.labelled += rows
        into.agreed += int(np.count_nonzero(same))
    left, right = _numeric(serving, serving_out, rows), _numeric(candidate, candidate_out, rows)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    sp, cp = serving.probability_output, candidate.probability_output
    if sp in left and cp in right and left[sp].shape == right[cp].shape:
        pairs = [(left[sp], right[cp])]
    else:
        pairs = [(v, right[n]) for n, v in left.items() if n in right and v.shape == right[n].shape]
    if pairs:
        diffs = np.concatenate([np.abs(x - y) for x, y in pairs], axis=1)
        into.abs_diff_sum += float(diffs.mean(axis=1).sum())


@dataclass(slots=True)
class Rollout:
    """The rollout of ``control.name``: what its newest control message said, and the results."""

    control: ControlMessage
    candidate: ServingModel | None = None  # None: rejected (``rejected`` says why) or ended
    comparison: Comparison = field(default_factory=Comparison)
    rejected: str | None = None
    ended: ControlMessage | None = None  # the promote or abort that closed it
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: float = 0.0  # monotonic time of ``ended``

    @property
    def name(self) -> str:
        return self.control.name

    @property
    def stage(self) -> str:
        """shadow or canary; promoted or aborted once ended."""
        return self.ended.stage if self.ended is not None else self.control.stage

    @property
    def candidate_version(self) -> str | None:
        c = self.control.candidate
        return c.version if c is not None else None

    def active(self) -> bool:
        """Records go to the candidate now (a promoted one: until a swap lands, at most
        :data:`PROMOTION_GRACE` seconds, so a promotion whose model-topic message never
        comes cannot route differently from a restarted worker for longer)."""
        if self.candidate is None:
            return False
        promoted = self.ended is not None and self.ended.stage == "promoted"
        return not promoted or time.monotonic() - self.ended_at < PROMOTION_GRACE

    def to_candidate(self, key: bytes | None, record_id: Any) -> bool:
        """Canary (or a promotion not swapped in yet): does this record go to the candidate?"""
        if self.stage == "promoted":
            return True
        return canary_share(_routing_key(key, record_id)) < self.control.fraction

    def figures(self, serving: ServingModel | None) -> RolloutFigures:
        return self.comparison.figures(serving, self.candidate)

    def describe(self, serving: ServingModel | None) -> dict[str, Any]:
        """The public view (``GET /models/{name}/rollout``, heartbeats)."""
        c, ended = self.control, self.ended
        figures = self.figures(serving)
        return {
            "name": c.name,
            "stage": self.stage,
            "fraction": c.fraction,  # of keys the candidate serves (shadow: 0, it serves none)
            "candidate": self.candidate_version,
            "candidate_sha256": c.candidate.sha256 if c.candidate else None,
            "serving": serving.version if serving is not None else None,
            "since": self.since.isoformat(),
            "who": c.who,
            "why": c.why,
            "policy": c.policy.model_dump() if c.policy else None,
            "rejected": self.rejected,
            "report": figures.report(),
            "figures": figures.model_dump(),
            "decision": (
                {
                    "stage": ended.stage,
                    "who": ended.who,
                    "why": ended.why,
                    "at": ended.at.isoformat(),
                    "figures": ended.figures.report() if ended.figures else None,
                }
                if ended is not None
                else None
            ),
        }

    def same_candidate(self, control: ControlMessage) -> bool:
        mine, theirs = self.control.candidate, control.candidate
        return (
            mine is not None
            and theirs is not None
            and (mine.version, mine.sha256) == (theirs.version, theirs.sha256)
        )


Outcome = Literal["promoted", "aborted"]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    why: str


def evaluate(policy: RolloutPolicy, figures: RolloutFigures) -> Decision | None:
    """Promote or abort once ``promote_after`` records are compared; None: not yet."""
    if figures.compared < policy.promote_after:
        return None
    facts = [f"compared {figures.compared}"]
    failed: list[str] = []
    rate = figures.error_rate
    facts.append(f"error rate {rate:.4f} (max {policy.max_error_rate})")
    if rate > policy.max_error_rate:
        failed.append("error rate")
    if policy.min_agreement is not None:
        agreement = figures.agreement
        shown = "n/a" if agreement is None else f"{agreement:.4f}"
        facts.append(f"agreement {shown} (min {policy.min_agreement})")
        if agreement is None or agreement < policy.min_agreement:
            failed.append("agreement")
    if policy.max_p99_ms is not None:
        p99 = figures.candidate_p99_ms
        facts.append(f"candidate p99 {p99} ms (max {policy.max_p99_ms})")
        if p99 is None or p99 > policy.max_p99_ms:
            failed.append("p99")
    if policy.min_labels is not None:
        verdict = judge(policy.min_labels, policy.max_quality_loss, figures.truth)
        if verdict is None:
            return None  # not enough labelled records yet
        worse, truth = verdict
        facts.append(truth)
        if worse:
            failed.append("quality")
    if figures.mean_abs_diff is not None:
        facts.append(f"mean abs diff {figures.mean_abs_diff:.4f}")
    if failed:
        return Decision("aborted", f"automatic: {', '.join(failed)} failed: {'; '.join(facts)}")
    return Decision("promoted", f"automatic: policy met: {'; '.join(facts)}")
