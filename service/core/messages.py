"""Wire formats: model messages, data records, scored and dead-letter records.

Everything that crosses Kafka is described here and nowhere else. Model
messages are rare and validated with pydantic; data records are many, so they
are decoded with orjson into a small slotted dataclass, checking exactly what
scoring needs and naming every failure (see :mod:`service.core.errors`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.core import errors

__all__ = [
    "HEADER_ERROR",
    "HEADER_MODEL",
    "HEADER_ORIGINAL_SIZE",
    "HEADER_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "HEADER_VERSION",
    "NAME_PATTERN",
    "VERSION_PATTERN",
    "DataRecord",
    "Features",
    "ModelMessage",
    "archive_key",
    "decode_record",
    "decode_records",
    "decode_slow",
    "encode_model_message",
    "exact_id",
    "parse_model_message",
    "problems",
    "utc_now_iso",
]

HEADER_MODEL = "hotswap-model"
HEADER_VERSION = "hotswap-version"
HEADER_REASON = "hotswap-reason"
HEADER_ERROR = "hotswap-error"
HEADER_SOURCE_TOPIC = "hotswap-source-topic"
HEADER_SOURCE_PARTITION = "hotswap-source-partition"
HEADER_SOURCE_OFFSET = "hotswap-source-offset"
HEADER_ORIGINAL_SIZE = "hotswap-original-size"  # on a letter whose record was too large to keep

Features = list[float] | dict[str, float]

#: Version labels: a letter or digit, then letters, digits and ``. _ + : @ ~ -``, at most 200.
#: Every one is a single URL path segment as is, so every route reaches every label.
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+:@~-]{0,199}$"


#: Names that ``publish`` gives a new model: no ``/`` or control character, not ``.`` or
#: ``..`` (one URL path segment of ``/v2/models/{name}/infer``). Messages already on a model
#: topic are read with any name of 1 to 200 characters, as before: they serve over Kafka.
NAME_PATTERN = r"^(?!\.\.?$)[^/\x00-\x1f\x7f]{1,200}$"


class ModelMessage(BaseModel):
    """A model version published to the model topic (key = ``name``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    version: str = Field(pattern=VERSION_PATTERN, description="A label in the safe alphabet.")
    format: str = "onnx"
    description: str = ""
    data: str | None = Field(default=None, description="Base64 of the artifact.")
    location: str | None = Field(default=None, description="file://, http(s):// or s3:// URL.")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    metadata: dict[str, Any] = Field(default_factory=dict)
    signature: str | None = Field(default=None, description="Base64 Ed25519 signature.")
    published_at: datetime | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelMessage:
        if (self.data is None) == (self.location is None):
            raise ValueError("exactly one of `data` or `location` is required")
        return self

    def artifact_bytes(self, limit: int) -> bytes:
        """Decode inline ``data``; refuse invalid base64 or more than ``limit`` bytes."""
        assert self.data is not None
        if len(self.data) > 4 * -(-limit // 3):  # longer than any encoding of `limit` bytes
            raise errors.ArtifactTooLarge(f"inline artifact is over the {limit} byte limit")
        try:
            return base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise errors.InvalidBase64(f"`data` is not valid base64: {exc}") from exc

    @property
    def feature_names(self) -> list[str] | None:
        names = self.metadata.get("feature_names")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return list(names)
        return None


def problems(exc: ValidationError) -> str:
    """What a message got wrong, on one line: ``field: problem; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
    )


def parse_model_message(key: bytes | None, value: bytes) -> ModelMessage:
    """Validate a model message; the Kafka key, when set, must equal ``name``."""
    try:
        message = ModelMessage.model_validate_json(value)
    except ValidationError as exc:
        raise errors.InvalidModelMessage(problems(exc)[:500]) from None
    if key is not None and key.decode("utf-8", "replace") != message.name:
        raise errors.InvalidModelMessage(f"message key {key!r} differs from name {message.name!r}")
    if message.format != "onnx":
        raise errors.UnsupportedFormat(f"format {message.format!r} is not served (only 'onnx')")
    return message


def encode_model_message(message: ModelMessage) -> bytes:
    """Serialize a model message for the model topic."""
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))


def archive_key(name: str, version: str) -> bytes:
    """Key of a version in the archive topic: compaction keeps one message per version."""
    return f"{name}\x00{version}".encode()


@dataclass(slots=True)
class DataRecord:
    """A decoded data record: which model, which features, and the caller's id."""

    id: Any
    model: str
    features: Features


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.NonNumericValue(f"{where} is {type(value).__name__}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise errors.NonFiniteValue(f"{where} is too large for a float") from None
    if not math.isfinite(number):
        raise errors.NonFiniteValue(f"{where} is {number}")
    return number


_PLAIN = frozenset({float, int})


def _plain_numbers(values: list[Any]) -> bool:
    """True when every value is a float or a (non-bool) int: the common, fast case. Only
    used on orjson's output, which holds no NaN, infinity or ints beyond 64 bits."""
    return {type(v) for v in values} <= _PLAIN


def _finite(text: str) -> float:
    """NaN, Infinity and numbers beyond a float's range are ``non_finite`` anywhere in the
    record (an id among them would be written back as ``null``)."""
    number = float(text)
    if not math.isfinite(number):
        raise errors.NonFiniteValue(f"record holds {text[:40]}, which is not a finite number")
    return number


def decode_slow(value: bytes, exc: orjson.JSONDecodeError) -> Any:
    """Tell apart why orjson refused a record (bad records only, so speed is moot).

    orjson refuses ``NaN``/``Infinity`` literals and numbers that overflow a
    float; they are reported as ``non_finite`` wherever they are, not as ``invalid_json``. A
    leading byte-order mark (some Windows and .NET producers write one) is read
    past, and a lone surrogate escape is accepted as Python's own parser does.
    """
    try:
        text = value.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise errors.InvalidUtf8("record is not valid UTF-8") from None
    try:
        return json.loads(text, parse_constant=_finite, parse_float=_finite)
    except (ValueError, RecursionError):
        raise errors.InvalidJson(f"record is not JSON: {exc}") from None


def decode_record(value: bytes | None, *, max_bytes: int, default_model: str = "") -> DataRecord:
    """Decode and check one data record, raising a :class:`RecordRejected` on any defect.

    ``NaN``/``Infinity`` literals and numbers that overflow a float are
    refused as ``non_finite``.
    """
    if value is None:
        raise errors.NullValue("record value is null")
    if not value:
        raise errors.EmptyValue("record value is empty")
    if len(value) > max_bytes:
        raise errors.RecordTooLarge(f"record is {len(value)} bytes, limit {max_bytes}")
    fast = True
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        doc = decode_slow(value, exc)
        fast = False
    if not isinstance(doc, dict):
        raise errors.NotAnObject(f"record is a JSON {type(doc).__name__}, not an object")
    model = doc.get("model", default_model) or default_model
    if not model:
        raise errors.MissingModel("record has no `model` and no default model is set")
    if not isinstance(model, str):
        raise errors.MissingModel("record `model` is not a string")
    raw = doc.get("features")
    features: Features
    if isinstance(raw, list):
        if fast and _plain_numbers(raw):
            features = raw
        else:
            features = [_number(v, f"features[{i}]") for i, v in enumerate(raw)]
    elif isinstance(raw, dict):
        features = {str(k): _number(v, f"features.{k}") for k, v in raw.items()}
    elif raw is None:
        raise errors.MissingFeatures("record has no `features`")
    else:
        raise errors.MissingFeatures("`features` must be a list or an object")
    return DataRecord(id=exact_id(value, doc.get("id")), model=model, features=features)


def exact_id(value: bytes, record_id: Any) -> Any:
    """The record's id as written: orjson reads an integer beyond 64 bits as a float
    (so such a float is read again). orjson cannot write it either: its record is
    dead-lettered ``scoring_failed`` rather than given back another id."""
    if type(record_id) is not float or not abs(record_id) >= 2.0**63:  # orjson's own range
        return record_id
    try:
        doc = json.loads(value.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return record_id
    return doc.get("id", record_id) if isinstance(doc, dict) else record_id


def decode_records(
    values: Sequence[bytes | None], *, max_bytes: int, default_model: str = ""
) -> list[DataRecord | errors.RecordRejected]:
    """:func:`decode_record` for a batch: each record decoded, or the reason it is refused.

    The same checks and the same errors, done per batch where they can be: the
    common record (an object with a model name and a list of plain numbers) costs
    one ``orjson.loads``, and the numbers of the whole batch are type-checked in
    one pass. Anything else takes :func:`decode_record`'s path, which names the defect.
    """
    loads, decode_error, make = orjson.loads, orjson.JSONDecodeError, DataRecord
    out: list[DataRecord | errors.RecordRejected] = []
    lists: list[list[Any]] = []
    keep, collect = out.append, lists.append
    for value in values:
        if value and len(value) <= max_bytes:
            try:
                doc = loads(value)
            except decode_error:
                doc = None
            if type(doc) is dict:
                get = doc.get
                model = get("model") or default_model
                raw = get("features")
                if type(raw) is list and type(model) is str and model:
                    record_id = get("id")
                    if type(record_id) is float:
                        record_id = exact_id(value, record_id)
                    keep(make(record_id, model, raw))
                    collect(raw)
                    continue
        keep(_decode_or_refuse(value, max_bytes, default_model))
    if lists and not set(map(type, chain.from_iterable(lists))) <= _PLAIN:
        for i, record in enumerate(out):  # some record holds a non-number: find which
            if type(record) is not DataRecord or type(record.features) is not list:
                continue
            if not _plain_numbers(record.features):
                try:
                    record.features = [
                        _number(v, f"features[{j}]") for j, v in enumerate(record.features)
                    ]
                except errors.RecordRejected as exc:
                    out[i] = _bare(exc)
    return out


def _decode_or_refuse(
    value: bytes | None, max_bytes: int, default_model: str
) -> DataRecord | errors.RecordRejected:
    try:
        return decode_record(value, max_bytes=max_bytes, default_model=default_model)
    except errors.RecordRejected as exc:
        return _bare(exc)


def _bare(exc: errors.RecordRejected) -> errors.RecordRejected:
    """The refusal without its traceback and context, kept as a value: its traceback's
    frames would reach the list it is kept in (a cycle per bad record, holding its bytes
    until the rare cycle collection); only its reason and detail are used."""
    exc.__traceback__ = exc.__context__ = exc.__cause__ = None
    return exc


def utc_now_iso() -> str:
    """Current UTC time, ISO 8601 with milliseconds: the ``scored_at`` of records."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")
