"""Any record shape: a model's inputs read from the record's own fields, and the
``prediction`` an enriched output carries.

Transport-free: records arrive here already decoded (Avro, Protobuf, JSON Schema
by :mod:`service.kafka.schemas`; plain JSON here) as dicts. The coercion rule is
the docs' (docs/how-to/your-topics.md, "Record shapes"): ints and floats as they
are, booleans 1.0/0.0, strings holding a number (after stripping blanks) that
number; anything else, and NaN or infinity, is ``bad_feature``; an absent field,
or a null one, is ``missing_feature``. Avro decimals count as numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import orjson

from service.core import errors
from service.core.messages import decode_slow, exact_id
from service.core.registry import ServingModel

__all__ = [
    "coerce",
    "enriched_json",
    "envelope_features",
    "features_of",
    "lookup",
    "plain_document",
    "render_prediction",
]

logger = logging.getLogger(__name__)

_ABSENT = object()


def coerce(value: Any, path: str) -> float:
    """A feature's value as a float, by the documented rule; ``bad_feature`` otherwise."""
    kind = type(value)
    if kind is float or kind is int:
        number = float(value)
    elif kind is bool:
        return 1.0 if value else 0.0
    elif kind is str:
        try:
            number = float(value.strip())
        except ValueError:
            raise errors.BadFeature(f"{path} is {value[:40]!r}, not a number") from None
    elif isinstance(value, int | float | Decimal):  # Avro decimals, numpy scalars
        number = float(value)
    else:
        raise errors.BadFeature(f"{path} is {kind.__name__}, not a number")
    if not math.isfinite(number):
        raise errors.BadFeature(f"{path} is {number}, not a finite number")
    return number


def lookup(doc: dict[str, Any], path: str) -> Any:
    """The value at ``path``: a field of that exact name, else a dotted walk into nested
    records (``payment.amount``); raises ``missing_feature`` when absent or null."""
    value = doc.get(path, _ABSENT)
    if value is _ABSENT and "." in path:
        value = doc
        for part in path.split("."):
            if type(value) is not dict:
                value = _ABSENT
                break
            value = value.get(part, _ABSENT)
    if value is _ABSENT or value is None:
        raise errors.MissingFeature(f"missing feature: {path}")
    return value


def features_of(doc: dict[str, Any], names: Sequence[str]) -> list[float]:
    """The model's row from the record's fields, in the model's feature order."""
    return [coerce(lookup(doc, name), name) for name in names]


def envelope_features(doc: dict[str, Any], names: Sequence[str] | None, width: int) -> list[float]:
    """A hotswap envelope's ``features`` (a list, or an object keyed by feature name)."""
    raw = doc["features"]
    if isinstance(raw, list):
        if len(raw) != width:
            raise errors.WrongFeatureCount(f"record has {len(raw)} features, model takes {width}")
        return [coerce(v, f"features[{i}]") for i, v in enumerate(raw)]
    if isinstance(raw, dict) and names:
        return features_of(raw, names)
    raise errors.MissingFeatures("`features` must be a list, or an object and a model with names")


def plain_document(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """An unframed record as a JSON object, refused with the envelope's own reasons."""
    if value is None:
        raise errors.NullValue("record value is null")
    if not value:
        raise errors.EmptyValue("record value is empty")
    if len(value) > max_bytes:
        raise errors.RecordTooLarge(f"record is {len(value)} bytes, limit {max_bytes}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        doc = decode_slow(value, exc)  # the reason, or the document orjson could not read
    if type(doc) is not dict:
        raise errors.NotAnObject(f"record is a JSON {type(doc).__name__}, not an object")
    if type(doc.get("id")) is float:  # exact_id reads again only beyond 64 bits
        doc["id"] = exact_id(value, doc["id"])
    return doc  # type: ignore[no-any-return]


def render_prediction(
    model: ServingModel, outputs: dict[str, np.ndarray], ids: list[Any]
) -> list[bytes]:
    """The ``prediction`` of each row, as JSON: ``{model, version, label, probabilities}``
    for a classifier (probabilities keyed by class as strings), ``{model, version, value}``
    for a regressor. ``ids`` only sets the count (the row's record carries its own id)."""
    sig = model.runtime.signature
    name, version = model.name, model.version
    dumps = orjson.dumps
    if sig.label_output and sig.label_output in outputs:
        labels = outputs[sig.label_output].reshape(len(ids), -1)[:, 0].tolist()
        probas = outputs.get(sig.probability_output or "")
        classes = [str(c) for c in sig.classes] if sig.classes else None
        if probas is None or classes is None:
            return [dumps({"model": name, "version": version, "label": lb}) for lb in labels]
        rows = probas.reshape(len(ids), -1).tolist()
        return [
            dumps(
                {
                    "model": name,
                    "version": version,
                    "label": label,
                    "probabilities": dict(zip(classes, row)),
                }
            )
            for label, row in zip(labels, rows)
        ]
    first = next(iter(outputs.values()))
    values = first.reshape(len(ids), -1)[:, 0].astype(float).tolist()
    return [dumps({"model": name, "version": version, "value": v}) for v in values]


def enriched_json(doc: dict[str, Any], prediction: bytes) -> bytes:
    """A plain JSON record unchanged, plus its ``prediction`` field."""
    return orjson.dumps({**doc, "prediction": orjson.loads(prediction)})
