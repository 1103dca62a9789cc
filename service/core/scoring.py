"""Scoring a micro-batch: decode, route by model, one predict call per model.

Transport-free: it takes records as bytes with their source coordinates and
returns what to publish (scored or dead-letter), in input order, so the Kafka
agent, the tests and the benchmarks all drive the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.core import errors
from service.core.messages import (
    HEADER_ERROR,
    HEADER_MODEL,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_VERSION,
    DataRecord,
    decode_record,
    utc_now_iso,
)
from service.core.registry import ModelRegistry, ServingModel
from service.core.runtime import Signature

__all__ = ["BatchResult", "DeadLetter", "InputRecord", "ModelCall", "Scored", "Scorer"]

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@dataclass(slots=True, frozen=True)
class InputRecord:
    """A record as read from the data topic."""

    key: bytes | None
    value: bytes | None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp: float | None = None  # seconds since the epoch


@dataclass(slots=True, frozen=True)
class Scored:
    key: bytes | None
    value: bytes
    headers: Headers
    model: str
    version: str
    source: InputRecord


@dataclass(slots=True, frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str
    detail: str
    source: InputRecord


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


def _source_headers(record: InputRecord) -> Headers:
    return [
        (HEADER_SOURCE_TOPIC, record.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
    ]


def _fixed_headers(model: ServingModel, topic: str) -> Headers:
    """The headers every record scored by ``model`` from ``topic`` shares."""
    return [
        (HEADER_MODEL, model.name.encode()),
        (HEADER_VERSION, model.version.encode()),
        (HEADER_SOURCE_TOPIC, topic.encode()),
    ]


def dead_letter(record: InputRecord, error: errors.HotswapError) -> DeadLetter:
    """The untouched record plus headers naming why, and where it came from."""
    headers = [
        (HEADER_REASON, error.reason.encode()),
        (HEADER_ERROR, error.detail[:1000].encode("utf-8", "replace")),
        *_source_headers(record),
    ]
    return DeadLetter(record.key, record.value, headers, error.reason, error.detail, record)


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

    def score(self, records: Sequence[InputRecord]) -> BatchResult:
        result = BatchResult()
        slots: list[Scored | DeadLetter | None] = [None] * len(records)
        groups: dict[str, list[tuple[int, DataRecord]]] = {}
        for i, record in enumerate(records):
            try:
                decoded = decode_record(
                    record.value, max_bytes=self._max_bytes, default_model=self._default_model
                )
            except errors.RecordRejected as exc:
                slots[i] = dead_letter(record, exc)
                continue
            groups.setdefault(decoded.model, []).append((i, decoded))
        for name, members in groups.items():
            model = self._registry.get(name)
            if model is None:
                for i, _ in members:
                    unknown = errors.UnknownModel(f"no model named {name!r} is serving")
                    slots[i] = dead_letter(records[i], unknown)
                continue
            self._score_group(model, members, records, slots, result)
        result.outputs = [s for s in slots if s is not None]
        return result

    def _score_group(
        self,
        model: ServingModel,
        members: list[tuple[int, DataRecord]],
        records: Sequence[InputRecord],
        slots: list[Scored | DeadLetter | None],
        result: BatchResult,
    ) -> None:
        signature = model.runtime.signature
        rows: list[list[float]] = []
        positions: list[int] = []
        for i, decoded in members:
            try:
                rows.append(_row(decoded.features, signature))
                positions.append(i)
            except errors.RecordRejected as exc:
                slots[i] = dead_letter(records[i], exc)
        if not rows:
            return
        batch = np.asarray(rows, dtype=np.float32)
        started = time.perf_counter()
        try:
            outputs = model.runtime.predict(batch)
        except Exception as exc:
            logger.warning(
                "batch predict failed for %s, scoring rows one by one: %s", model.name, exc
            )
            self._score_rows(model, batch, positions, members, records, slots, result)
            return
        seconds = time.perf_counter() - started
        model.stats.observe(seconds * 1000, len(rows))
        result.calls.append(ModelCall(model.name, model.version, len(rows), seconds))
        ids = {i: d.id for i, d in members}
        fixed: dict[str, Headers] = {}
        for j, value in enumerate(self._render(model, outputs, [ids[i] for i in positions])):
            record = records[positions[j]]
            if record.topic not in fixed:
                fixed[record.topic] = _fixed_headers(model, record.topic)
            slots[positions[j]] = self._scored(model, record, value, fixed[record.topic])

    def _score_rows(
        self,
        model: ServingModel,
        batch: np.ndarray,
        positions: list[int],
        members: list[tuple[int, DataRecord]],
        records: Sequence[InputRecord],
        slots: list[Scored | DeadLetter | None],
        result: BatchResult,
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
            slots[i] = self._scored(model, records[i], self._render(model, outputs, [ids[i]])[0])

    @staticmethod
    def _scored(
        model: ServingModel, record: InputRecord, value: bytes, fixed: Headers | None = None
    ) -> Scored:
        if fixed is None:
            fixed = _fixed_headers(model, record.topic)
        headers = [
            *fixed,
            (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
        ]
        return Scored(record.key, value, headers, model.name, model.version, record)

    @staticmethod
    def _render(model: ServingModel, outputs: dict[str, np.ndarray], ids: list[Any]) -> list[bytes]:
        """One JSON document per row: id, model, version, label/probabilities or outputs."""
        sig = model.runtime.signature
        scored_at = utc_now_iso()
        columns: dict[str, list[Any]] = {name: value.tolist() for name, value in outputs.items()}
        labels = columns.pop(sig.label_output) if sig.label_output else None
        probas = columns.pop(sig.probability_output) if sig.probability_output else None
        classes = [str(c) for c in sig.classes] if sig.classes else None
        docs: list[bytes] = []
        for j, record_id in enumerate(ids):
            doc: dict[str, Any] = {"id": record_id, "model": model.name, "version": model.version}
            if labels is not None:
                label = labels[j]
                doc["label"] = label[0] if isinstance(label, list) and len(label) == 1 else label
            if probas is not None:
                row = probas[j]
                doc["probabilities"] = dict(zip(classes, row)) if classes else row
            if columns:
                doc["outputs"] = {name: col[j] for name, col in columns.items()}
            doc["scored_at"] = scored_at
            docs.append(orjson.dumps(doc))
        return docs
