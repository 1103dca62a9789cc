"""The join's changelog: events that rebuild one partition's join state when replayed.

Transport-free: encoding, decoding and applying events. Three kinds, each a
JSON object written to the changelog partition of the data partition it
concerns, in the order the worker applied them:

- ``p``: a block of predictions (model, version, keys, ids, labels,
  probabilities or values);
- ``l``: labels read from the labels topic, each with its offset, and the
  next offset to read: replay skips offsets already applied, so a label is
  joined once even when two workers briefly both read its partition;
- ``s``: a snapshot of the quality totals (since each version began, first
  window) and of the next labels offset, which outlives the retention of the
  events before it.

Keys are bytes; they travel as Latin-1 text (every byte maps to one code point).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from service.core.labels import PartitionJoin
from service.core.predictions import PredictionBlock

__all__ = ["apply_event", "labels_event", "predictions_event", "snapshot_event"]

logger = logging.getLogger(__name__)


def _key_text(key: bytes | None) -> str | None:
    return key.decode("latin-1") if key is not None else None


def _key_bytes(text: str | None) -> bytes | None:
    return text.encode("latin-1") if text is not None else None


def predictions_event(block: PredictionBlock) -> bytes:
    return orjson.dumps(
        {
            "t": "p",
            "at": block.at,
            "m": block.model,
            "v": block.version,
            "c": block.classes,
            "k": [_key_text(k) for k in block.keys],
            "i": block.ids,
            "l": block.labels,
            "p": block.probs,
            "x": block.values,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
        default=str,
    )


def labels_event(
    at: float, labels: Sequence[tuple[int, bytes | None, Any, Any]], next_: int
) -> bytes:
    """``labels``: (offset, key, id, label) in offset order; ``next_``: the next to read."""
    rows = [[offset, _key_text(key), rid, label] for offset, key, rid, label in labels]
    return orjson.dumps({"t": "l", "at": at, "r": rows, "n": next_}, default=str)


def snapshot_event(at: float, join: PartitionJoin) -> bytes:
    return orjson.dumps({"t": "s", "at": at, "q": join.book.snapshot(), "n": join.labels_next})


def apply_event(join: PartitionJoin, raw: bytes) -> None:
    """Apply one changelog event to ``join``, clocked by the event's own time."""
    event = orjson.loads(raw)
    kind, at = event["t"], float(event["at"])
    join.expire(at)
    if kind == "p":
        probs, values = event.get("p"), event.get("x")
        block = PredictionBlock(
            event["m"],
            event["v"],
            at,
            [_key_bytes(k) for k in event["k"]],
            event["i"],
            labels=event.get("l"),
            probs=np.asarray(probs, dtype=np.float64) if probs is not None else None,
            values=np.asarray(values, dtype=np.float64) if values is not None else None,
            classes=event.get("c"),
        )
        join.predicted(block, at)
    elif kind == "l":
        for offset, key, rid, label in event["r"]:
            if offset >= join.labels_next:
                join.labelled(_key_bytes(key), rid, label, at)
        join.labels_next = max(join.labels_next, int(event["n"]))
    elif kind == "s":
        join.book.restore(event["q"])
        join.labels_next = max(join.labels_next, int(event["n"]))
    else:
        logger.warning("unknown join changelog event %r", kind)
