"""Scoring a micro-batch: decode, route by model, one predict call per model.

Transport-free: it takes records as bytes with their source coordinates and
returns what to publish (scored or dead-letter), in input order, so the Kafka
agent, the tests and the benchmarks all drive the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.core import errors
from service.core.messages import DataRecord, decode_records
from service.core.outputs import (
    DeadLetter,
    InputRecord,
    Scored,
    dead_letter,
    render,
    scored,
    scored_all,
)
from service.core.registry import ModelRegistry, ServingModel
from service.core.rollout import Rollout, compare_outputs
from service.core.runtime import Signature
from service.core.runtime.base import Outputs
from service.core.uniform import Uniform, uniform_batch

__all__ = [
    "BatchResult",
    "DeadLetter",
    "InputRecord",
    "ModelCall",
    "Render",
    "Scored",
    "Scorer",
    "dead_letter",
]

logger = logging.getLogger(__name__)


Render = Callable[[ServingModel, Outputs, list[Any]], list[bytes]]


@dataclass(slots=True, frozen=True)
class ModelCall:
    """One predict call: which model version, how many rows, how long."""

    model: str
    version: str
    rows: int
    seconds: float


@dataclass(slots=True)
class BatchResult:
    outputs: list[Scored | DeadLetter] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)


def _row(features: list[float] | dict[str, float], signature: Signature) -> list[float]:
    if isinstance(features, list):
        if len(features) != signature.width:
            raise errors.WrongFeatureCount(
                f"record has {len(features)} features, model takes {signature.width}"
            )
        return features
    names = signature.feature_names
    if not names:
        raise errors.UnknownFeature("record names its features but the model has no names")
    missing = [n for n in names if n not in features]
    if missing:
        raise errors.MissingFeature(f"missing features: {', '.join(missing[:10])}")
    if len(features) != len(names):
        extra = sorted(set(features) - set(names))
        raise errors.UnknownFeature(f"unknown features: {', '.join(extra[:10])}")
    return [features[n] for n in names]


class Scorer:
    """Scores batches against the registry's current models."""

    def __init__(
        self, registry: ModelRegistry, *, max_record_bytes: int, default_model: str = ""
    ) -> None:
        self._registry = registry
        self._max_bytes = max_record_bytes
        self._default_model = default_model
        self.observer: Any = None  # quality and drift (service.core.observe.Observer), if any

    def score(self, records: Sequence[InputRecord]) -> BatchResult:
        result = BatchResult()
        values = [record.value for record in records]
        most, default = self._max_bytes, self._default_model
        uniform = uniform_batch(values, max_bytes=most, default_model=default)
        if uniform is not None and self._score_uniform(records, uniform, result):
            return result
        decoded: Sequence[DataRecord | errors.RecordRejected] = (
            uniform.records()
            if uniform
            else decode_records(values, max_bytes=most, default_model=default)
        )
        slots: list[Scored | DeadLetter | None] = [None] * len(records)
        groups: dict[str, list[tuple[int, DataRecord]]] = {}
        for i, item in enumerate(decoded):
            if type(item) is DataRecord:
                group = groups.get(item.model)
                if group is None:
                    group = groups[item.model] = []
                group.append((i, item))
            else:
                slots[i] = dead_letter(records[i], item)  # type: ignore[arg-type]
        shadows: list[Scored] = []
        for name, members in groups.items():
            model = self._registry.get(name)
            if model is None:
                for i, _ in members:
                    unknown = errors.UnknownModel(f"no model named {name!r} is serving")
                    slots[i] = dead_letter(records[i], unknown)
                continue
            self._score_group(model, members, records, slots, result, shadows)
        result.outputs = [s for s in slots if s is not None]
        result.outputs += shadows  # after the batch's own outputs; their topic is another
        return result

    def _score_uniform(
        self, records: Sequence[InputRecord], batch: Uniform, result: BatchResult
    ) -> bool:
        """The usual batch in one pass: every record valid, one model, no rollout.

        False when the batch is anything else (no such model, a rollout, rows of
        another width): the general path then handles it, group by group and
        record by record where it has to.
        """
        model = self._registry.get(batch.model)
        if model is None:
            return False
        rollout = self._registry.rollout(batch.model)
        if rollout is not None and rollout.active():
            return False
        if set(map(len, batch.rows)) != {model.runtime.signature.width}:
            return False
        rows = np.asarray(batch.rows, dtype=np.float32)
        outputs = self._predict(model, rows, result)
        if outputs is None:  # isolate the rows that make the model fail
            slots: list[Scored | DeadLetter | None] = [None] * len(records)
            members = list(enumerate(batch.records()))
            self._score_rows(
                model, rows, list(range(len(members))), members, records, slots, result
            )
            result.outputs = [s for s in slots if s is not None]
            return True
        if self.observer is not None:
            self.observer.scored(model, rows, outputs, records, batch.ids)
        result.outputs = list(scored_all(model, records, render(model, outputs, batch.ids)))
        return True

    def _score_group(
        self,
        model: ServingModel,
        members: list[tuple[int, DataRecord]],
        records: Sequence[InputRecord],
        slots: list[Scored | DeadLetter | None],
        result: BatchResult,
        shadows: list[Scored],
        render: Render = render,
    ) -> None:
        signature = model.runtime.signature
        width = signature.width
        rows: list[list[float]] = [d.features for _, d in members]  # type: ignore[misc]
        if all(type(row) is list and len(row) == width for row in rows):  # the common case
            positions = [i for i, _ in members]
            ids = [d.id for _, d in members]
        else:
            rows, positions, ids = [], [], []
            for i, decoded in members:
                try:
                    rows.append(_row(decoded.features, signature))
                except errors.RecordRejected as exc:
                    slots[i] = dead_letter(records[i], exc)
                    continue
                positions.append(i)
                ids.append(decoded.id)
        if not rows:
            return
        batch = np.asarray(rows, dtype=np.float32)
        outputs = self._predict(model, batch, result)
        if outputs is None:
            self._score_rows(model, batch, positions, members, records, slots, result, render)
            return
        if self.observer is not None:
            self.observer.scored(model, batch, outputs, [records[i] for i in positions], ids)
        rollout = self._registry.rollout(model.name)
        if rollout is None or not rollout.active():
            self._place(model, outputs, ids, positions, records, slots, render)
            return
        taken = self._roll_out(
            rollout, model, batch, outputs, ids, positions, records, slots, shadows, render
        )
        kept = [j for j in range(len(positions)) if j not in taken]
        if len(kept) < len(positions):
            outputs = {k: v[kept] for k, v in outputs.items()}
        kept_ids, kept_positions = [ids[j] for j in kept], [positions[j] for j in kept]
        self._place(model, outputs, kept_ids, kept_positions, records, slots, render)

    def _roll_out(
        self,
        rollout: Rollout,
        model: ServingModel,
        batch: np.ndarray,
        outputs: dict[str, np.ndarray],
        ids: list[Any],
        positions: list[int],
        records: Sequence[InputRecord],
        slots: list[Scored | DeadLetter | None],
        shadows: list[Scored],
        render: Render,
    ) -> set[int]:
        """Shadow: the candidate scores every row too, to the shadow topic. Canary: the rows
        whose key falls below the fraction are the candidate's. Returns the rows it took."""
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
        got = self._predict(candidate, rows, None)
        if got is None:  # the serving version's outputs stand for these rows
            figures.candidate_errors += len(picked)
            return set()
        figures.candidate_rows += len(picked)
        mine = outputs if shadow else {k: v[picked] for k, v in outputs.items()}
        sig = candidate.runtime.signature
        compare_outputs(model.runtime.signature, mine, sig, got, len(picked), figures)
        docs = render(candidate, got, [ids[j] for j in picked])
        sources = [records[positions[j]] for j in picked]
        if self.observer is not None:
            self.observer.scored(candidate, rows, got, sources, [ids[j] for j in picked], True)
        if shadow:
            shadows.extend(scored_all(candidate, sources, docs, shadow=True))
            return set()
        for j, output in zip(picked, scored_all(candidate, sources, docs)):
            slots[positions[j]] = output
        return set(picked)

    @staticmethod
    def _predict(
        model: ServingModel, batch: np.ndarray, result: BatchResult | None
    ) -> dict[str, np.ndarray] | None:
        """One predict call, timed; None when it fails (the caller decides what then)."""
        started = time.perf_counter()
        try:
            outputs = model.runtime.predict(batch)
        except Exception as exc:
            logger.warning("batch predict failed for %s %s: %s", model.name, model.version, exc)
            return None
        seconds = time.perf_counter() - started
        model.stats.observe(seconds * 1000, len(batch))
        if result is not None:
            result.calls.append(ModelCall(model.name, model.version, len(batch), seconds))
        return outputs

    @staticmethod
    def _place(
        model: ServingModel,
        outputs: dict[str, np.ndarray],
        ids: list[Any],
        positions: list[int],
        records: Sequence[InputRecord],
        slots: list[Scored | DeadLetter | None],
        render: Render,
    ) -> None:
        sources = [records[i] for i in positions]
        for i, output in zip(positions, scored_all(model, sources, render(model, outputs, ids))):
            slots[i] = output

    def _score_rows(
        self,
        model: ServingModel,
        batch: np.ndarray,
        positions: list[int],
        members: list[tuple[int, DataRecord]],
        records: Sequence[InputRecord],
        slots: list[Scored | DeadLetter | None],
        result: BatchResult,
        render: Render = render,
    ) -> None:
        """Isolate the rows that make the model fail; score the others."""
        ids = {i: d.id for i, d in members}
        for j, i in enumerate(positions):
            started = time.perf_counter()
            try:
                outputs = model.runtime.predict(batch[j : j + 1])
            except Exception as exc:
                slots[i] = dead_letter(records[i], errors.ScoringFailed(str(exc)[:500]))
                continue
            seconds = time.perf_counter() - started
            model.stats.observe(seconds * 1000, 1)
            result.calls.append(ModelCall(model.name, model.version, 1, seconds))
            slots[i] = scored(model, records[i], render(model, outputs, [ids[i]])[0])
