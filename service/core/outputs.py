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
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
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
    document: Any = None  # with routes: the decoded record (a dict) or why it is refused
    frame: Any = None  # a Schema Registry framed record's decoding (its schema), else None


@dataclass(slots=True)
class Scored:
    key: bytes | None
    value: bytes
    headers: Headers
    model: str
    version: str
    source: InputRecord
    shadow: bool = False  # a shadow candidate's output: the shadow topic, not the scored one
    topic: str = ""  # a route's output topic; empty: the scored topic
    enrich: bool = False  # value is the prediction, to be merged into the input's format


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


def scored(model: ServingModel, record: InputRecord, value: bytes, shadow: bool = False) -> Scored:
    """The output of one row (see :func:`scored_all`)."""
    return scored_all(model, [record], [value], shadow)[0]


def scored_all(
    model: ServingModel, records: Sequence[InputRecord], docs: list[bytes], shadow: bool = False
) -> list[Scored]:
    """The outputs of rows scored by one model; shared headers built once per partition."""
    cache: dict[tuple[str, int], Headers] = {}
    outputs: list[Scored] = []
    append, name, version, offset_header = (
        outputs.append,
        model.name,
        model.version,
        HEADER_SOURCE_OFFSET,
    )
    topic, partition = "", -2
    fixed: Headers = []
    for record, value in zip(records, docs):
        if record.partition != partition or record.topic != topic:  # a fetch comes in runs
            topic, partition = record.topic, record.partition
            known = cache.get((topic, partition))
            if known is None:
                known = cache[topic, partition] = fixed_headers(model, topic, partition)
            fixed = known
        headers = [*fixed, (offset_header, b"%d" % record.offset)]
        append(Scored(record.key, value, headers, name, version, record, shadow))
    return outputs


def render(model: ServingModel, outputs: dict[str, np.ndarray], ids: list[Any]) -> list[bytes]:
    """One JSON document per row: id, model, version, label/probabilities or outputs."""
    sig = model.runtime.signature
    for output, value in outputs.items():  # zip below would drop the records without a row
        if len(value) != len(ids):
            raise ValueError(f"output {output!r} has {len(value)} rows for {len(ids)} records")
    scored_at = utc_now_iso()
    name, version = model.name, model.version
    columns: dict[str, list[Any]] = {output: value.tolist() for output, value in outputs.items()}
    labels = columns.pop(sig.label_output) if sig.label_output else None
    probas = columns.pop(sig.probability_output) if sig.probability_output else None
    if labels and all(type(label) is list and len(label) == 1 for label in labels):
        labels = [label[0] for label in labels]  # a column vector: one label per row
    classes = [str(c) for c in sig.classes] if sig.classes else None
    dumps = orjson.dumps
    if labels is not None and probas is not None and classes and not columns:  # a classifier
        # The same bytes as dumping each document whole, at half the cost: the parts
        # every row shares are encoded once, and each row's own values are dumped alone.
        head = b'{"id":'
        middle = b',"model":' + dumps(name) + b',"version":' + dumps(version) + b',"label":'
        after_label = b',"probabilities":'
        tail = b',"scored_at":' + dumps(scored_at) + b"}"
        join = b"".join
        return [
            join(
                (
                    head,
                    dumps(record_id),
                    middle,
                    dumps(label),
                    after_label,
                    dumps(dict(zip(classes, row))),
                    tail,
                )
            )
            for record_id, label, row in zip(ids, labels, probas)
        ]
    docs: list[bytes] = []
    for j, record_id in enumerate(ids):
        doc: dict[str, Any] = {"id": record_id, "model": name, "version": version}
        if labels is not None:
            doc["label"] = labels[j]
        if probas is not None:
            row = probas[j]
            doc["probabilities"] = dict(zip(classes, row)) if classes else row
        if columns:
            doc["outputs"] = {column: values[j] for column, values in columns.items()}
        doc["scored_at"] = scored_at
        docs.append(dumps(doc, option=orjson.OPT_NON_STR_KEYS))  # a ZipMap's int classes
    return docs
