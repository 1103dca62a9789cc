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
from service.core.candidate import score_candidate
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
from service.core.rows import as_rows, row_of, too_large
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


class Scorer:
    """Scores batches against the registry's current models."""

    def __init__(
        self, registry: ModelRegistry, *, max_record_bytes: int, default_model: str = ""
    ) -> None:
        self._registry = registry
        self._max_bytes = max_record_bytes
        self._default_model = default_model
        self.observer: Any = None  # quality and drift (service.core.observe.Observer), if any
        self._said: set[str] = set()  # failures logged with their traceback

    def score(self, records: Sequence[InputRecord]) -> BatchResult:
        """Every record's output or dead letter, in input order; never raises for a record.

        A defect no check names (an id orjson cannot write back, a model output
        that cannot be rendered, a bug) would otherwise fail the whole batch, and
        the feed would read it again forever: the batch is then scored record by
        record, and the records that still fail are dead-lettered ``scoring_failed``.
        """
        return self.isolating(self._score_batch, records)

    def isolating(
        self,
        score_batch: Callable[[Sequence[InputRecord]], BatchResult],
        records: Sequence[InputRecord],
    ) -> BatchResult:
        """``score_batch(records)``; if it raises, each record alone (see :meth:`score`)."""
        try:
            return score_batch(records)
        except Exception as exc:
            self._say_once(exc, len(records))
        result = BatchResult()
        for record in records:
            try:
                one = score_batch([record])
            except Exception as exc:
                failed = errors.ScoringFailed(f"{type(exc).__name__}: {exc}"[:500])
                result.outputs.append(dead_letter(record, failed))
                continue
            result.outputs += one.outputs
            result.calls += one.calls
        return result

    def _say_once(self, exc: Exception, records: int) -> None:
        """A warning per failing batch; the traceback once per kind of failure."""
        kind = f"{type(exc).__name__}: {str(exc)[:200]}"
        first = kind not in self._said
        if first and len(self._said) < 100:
            self._said.add(kind)
        logger.warning(
            "scoring a batch of %d records failed (%s); scoring them one by one",
            records,
            kind,
            exc_info=first,
        )

    def _score_batch(self, records: Sequence[InputRecord]) -> BatchResult:
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
        signature = model.runtime.signature
        if set(map(len, batch.rows)) != {signature.width}:
            return False
        rows, out_of_range = as_rows(batch.rows, signature.dtype)
        if out_of_range:  # the general path names their records
            return False
        outputs = self._predict(model, rows, result)
        if outputs is None:  # isolate the rows that make the model fail
            slots: list[Scored | DeadLetter | None] = [None] * len(records)
            members = list(enumerate(batch.records()))
            self._score_rows(
                model, rows, list(range(len(members))), members, records, slots, result
            )
            result.outputs = [s for s in slots if s is not None]
            return True
        docs = render(model, outputs, batch.ids)  # before the observer: this can fail
        if self.observer is not None:
            self.observer.scored(model, rows, outputs, records, batch.ids)
        result.outputs = list(scored_all(model, records, docs))
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
                    rows.append(row_of(decoded.features, signature))
                except errors.RecordRejected as exc:
                    slots[i] = dead_letter(records[i], exc)
                    continue
                positions.append(i)
                ids.append(decoded.id)
        if not rows:
            return
        batch, out_of_range = as_rows(rows, signature.dtype)
        if out_of_range:
            for j in out_of_range:
                slots[positions[j]] = dead_letter(records[positions[j]], too_large(batch.dtype))
            kept = sorted(set(range(len(positions))) - set(out_of_range))
            batch, positions, ids = (
                batch[kept],
                [positions[j] for j in kept],
                [ids[j] for j in kept],
            )
            if not positions:
                return
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
        taken = score_candidate(
            rollout,
            model,
            batch,
            outputs,
            ids,
            positions,
            records,
            slots,
            shadows,
            predict=lambda candidate, rows: self._predict(candidate, rows, None),
            render=render,
            observer=self.observer,
        )
        kept = [j for j in range(len(positions)) if j not in taken]
        if len(kept) < len(positions):
            outputs = {k: v[kept] for k, v in outputs.items()}
        kept_ids, kept_positions = [ids[j] for j in kept], [positions[j] for j in kept]
        self._place(model, outputs, kept_ids, kept_positions, records, slots, render)

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
