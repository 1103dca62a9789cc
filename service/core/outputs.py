"""What scoring produces: scored records and dead letters, their headers and documents.

A scored record is one JSON document per input row (id, model, version,
label/probabilities or outputs, ``scored_at``), keyed like its input, with
headers naming the model version and the source coordinates. A shadow
candidate's outputs are the same documents flagged ``shadow``: the publisher
writes them to the shadow topic, never to the scored topic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
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
    utc_now_iso,
)
from service.core.registry import ServingModel

__all__ = [
    "DeadLetter",
    "Headers",
    "InputRecord",
    "Scored",
    "dead_letter",
    "fixed_headers",
    "render",
    "scored",
    "scored_all",
]

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class InputRecord:
    """A record as read from the data topic."""

    key: bytes | None
    value: bytes | None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp: float | None = None  # seconds since the epoch


@dataclass(slots=True)
class Scored:
    key: bytes | None
    value: bytes
    headers: Headers
    model: str
    version: str
    source: InputRecord
    shadow: bool = False  # a shadow candidate's output: the shadow topic, not the scored one


@dataclass(slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str
    detail: str
    source: InputRecord


def _source_headers(record: InputRecord) -> Headers:
    return [
        (HEADER_SOURCE_TOPIC, record.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
    ]


def fixed_headers(model: ServingModel, topic: str, partition: int) -> Headers:
    """The headers every record scored by ``model`` from one source partition shares."""
    return [
        (HEADER_MODEL, model.name.encode()),
        (HEADER_VERSION, model.version.encode()),
        (HEADER_SOURCE_TOPIC, topic.encode()),
        (HEADER_SOURCE_PARTITION, str(partition).encode()),
    ]


def dead_letter(record: InputRecord, error: errors.HotswapError) -> DeadLetter:
    """The untouched record plus headers naming why, and where it came from."""
    headers = [
        (HEADER_REASON, error.reason.encode()),
        (HEADER_ERROR, error.detail[:1000].encode("utf-8", "replace")),
        *_source_headers(record),
    ]
    return DeadLetter(record.key, record.value, headers, error.reason, error.detail, record)


def scored(
    model: ServingModel,
    record: InputRecord,
    value: bytes,
    fixed: Headers | None = None,
    shadow: bool = False,
) -> Scored:
    if fixed is None:
        fixed = fixed_headers(model, record.topic, record.partition)
    headers = [*fixed, (HEADER_SOURCE_OFFSET, str(record.offset).encode())]
    return Scored(record.key, value, headers, model.name, model.version, record, shadow)


def scored_all(
    model: ServingModel, records: Sequence[InputRecord], docs: list[bytes], shadow: bool = False
) -> list[Scored]:
    """The outputs of rows scored by one model; shared headers built once per partition."""
    cache: dict[tuple[str, int], Headers] = {}
    outputs: list[Scored] = []
    for record, value in zip(records, docs):
        where = (record.topic, record.partition)
        fixed = cache.get(where)
        if fixed is None:
            fixed = cache[where] = fixed_headers(model, *where)
        outputs.append(scored(model, record, value, fixed, shadow))
    return outputs


def render(model: ServingModel, outputs: dict[str, np.ndarray], ids: list[Any]) -> list[bytes]:
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
