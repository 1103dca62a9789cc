"""Wire formats: every rejection reason of a data record and of a model message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core import errors
from service.core.messages import (
    DataRecord,
    ModelMessage,
    decode_record,
    decode_records,
    encode_model_message,
    parse_model_message,
)
from tests.models import MessageFactory

LIMIT = 1000
# No example database: nothing is written outside the tmp dirs.
FUZZ = settings(max_examples=300, deadline=None, database=None)
SHA = "ab" * 32


def _reason(value: bytes | None, *, default_model: str = "") -> str:
    with pytest.raises(errors.RecordRejected) as info:
        decode_record(value, max_bytes=LIMIT, default_model=default_model)
    return info.value.reason


# --- decode_record -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "null_value"),
        (b"", "empty_value"),
        (b"{" + b" " * LIMIT + b"}", "record_too_large"),
        (b'{"model": "wine", "features": [1, 2, \xff\xfe]}', "invalid_utf8"),
        (b"\xc3\x28", "invalid_utf8"),
        (b"not json at all", "invalid_json"),
        (b'{"model": "wine", "features": [1, 2', "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b"42", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b'{"features": [1, 2]}', "missing_model"),
        (b'{"model": "", "features": [1, 2]}', "missing_model"),
        (b'{"model": 7, "features": [1, 2]}', "missing_model"),
        (b'{"model": "wine"}', "missing_features"),
        (b'{"model": "wine", "features": null}', "missing_features"),
        (b'{"model": "wine", "features": "1,2"}', "missing_features"),
        (b'{"model": "wine", "features": [1, "2"]}', "non_numeric"),
        (b'{"model": "wine", "features": [1, true]}', "non_numeric"),
        (b'{"model": "wine", "features": [1, null]}', "non_numeric"),
        (b'{"model": "wine", "features": {"a": false}}', "non_numeric"),
        (b'{"model": "wine", "features": [1, NaN]}', "non_finite"),
        (b'{"model": "wine", "features": [1, Infinity]}', "non_finite"),
    ],
)
def test_decode_record_rejects_with_reason(value: bytes | None, reason: str) -> None:
    assert _reason(value) == reason


def test_decode_record_refuses_overflowing_number_as_non_finite() -> None:
    # The documented contract: "numbers that overflow a float become inf and are
    # refused as non-finite" (decode_record's docstring, errors.NonFiniteValue).
    assert _reason(b'{"model": "wine", "features": [1, 1e400]}') == "non_finite"


@pytest.mark.parametrize("record_id", [b"1e400", b"-1e400", b'{"k": [1e400]}', b"[NaN]"])
def test_an_id_beyond_a_float_is_refused_not_written_back_as_null(record_id: bytes) -> None:
    value = b'{"id": %s, "model": "wine", "features": [1]}' % record_id
    assert _reason(value) == "non_finite"
    assert isinstance(decode_records([value], max_bytes=LIMIT)[0], errors.NonFiniteValue)


def test_decode_record_at_size_limit_is_accepted() -> None:
    head = b'{"model": "m", "features": [1], "pad": "'
    value = head + b"x" * (LIMIT - len(head) - 2) + b'"}'
    assert len(value) == LIMIT
    assert decode_record(value, max_bytes=LIMIT).features == [1.0]


def test_decode_record_positional() -> None:
    record = decode_record(
        b'{"id": "r1", "model": "wine", "features": [1, 2.5, -3]}', max_bytes=LIMIT
    )
    assert record == DataRecord(id="r1", model="wine", features=[1.0, 2.5, -3.0])
    assert [type(v) for v in record.features] == [int, float, int]  # numbers, kept as decoded


def test_decode_record_huge_integer_is_non_finite() -> None:
    value = b'{"model": "wine", "features": [1' + b"0" * 400 + b"]}"
    with pytest.raises(errors.NonFiniteValue):
        decode_record(value, max_bytes=LIMIT)


def test_decode_record_named_features() -> None:
    record = decode_record(b'{"model": "wine", "features": {"a": 1, "b": 0.5}}', max_bytes=LIMIT)
    assert record.features == {"a": 1.0, "b": 0.5}
    assert record.id is None


def test_decode_record_uses_default_model_when_missing() -> None:
    record = decode_record(b'{"id": 3, "features": [1]}', max_bytes=LIMIT, default_model="wine")
    assert (record.id, record.model) == (3, "wine")


def test_decode_record_explicit_model_beats_default() -> None:
    record = decode_record(
        b'{"model": "iris", "features": [1]}', max_bytes=LIMIT, default_model="w"
    )
    assert record.model == "iris"


def test_decode_record_reason_classes() -> None:
    with pytest.raises(errors.NonNumericValue):
        decode_record(b'{"model": "m", "features": ["x"]}', max_bytes=LIMIT)
    with pytest.raises(errors.MissingModel):
        decode_record(b'{"features": [1]}', max_bytes=LIMIT)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_record_arbitrary_bytes_only_rejects(value: bytes) -> None:
    try:
        record = decode_record(value, max_bytes=200, default_model="d")
    except errors.RecordRejected:
        return
    assert isinstance(record, DataRecord)
    assert isinstance(record.model, str)
    assert record.model


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": _json,
            "model": st.text(max_size=5) | _json,
            "features": st.lists(_json_leaf, max_size=5)
            | st.dictionaries(st.text(max_size=5), _json_leaf, max_size=5)
            | _json,
        },
    )
)
def test_decode_record_arbitrary_objects_only_rejects(doc: dict[str, Any]) -> None:
    value = json.dumps(doc).encode()  # may contain NaN/Infinity literals on purpose
    try:
        record = decode_record(value, max_bytes=10_000)
    except errors.RecordRejected:
        return
    assert record.model == doc["model"]


# --- decode_records: the batch path agrees with the per-record one ------------------


def _one(value: bytes | None, default_model: str) -> DataRecord | str:
    try:
        return decode_record(value, max_bytes=200, default_model=default_model)
    except errors.RecordRejected as exc:
        return exc.reason


def _outcomes(items: list[DataRecord | errors.RecordRejected]) -> list[DataRecord | str]:
    return [item if isinstance(item, DataRecord) else item.reason for item in items]


_record_values = st.one_of(
    st.none(),
    st.binary(max_size=250),
    st.fixed_dictionaries(
        {},
        optional={
            "id": _json,
            "model": st.sampled_from(["wine", "", "iris"]) | _json,
            "features": st.lists(_json_leaf, max_size=4) | _json,
        },
    ).map(lambda doc: json.dumps(doc).encode()),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4).map(
        lambda fs: orjson.dumps({"model": "wine", "features": fs})
    ),
)


@FUZZ
@given(st.lists(_record_values, max_size=12), st.sampled_from(["", "d"]))
def test_decode_records_agrees_with_decode_record(values: list[bytes | None], default: str) -> None:
    """Same records, same reasons, same order, whatever the mix of good and bad records."""
    got = decode_records(values, max_bytes=200, default_model=default)
    assert _outcomes(got) == [_one(value, default) for value in values]


def test_decode_records_one_bad_number_refuses_only_its_record() -> None:
    good = b'{"model": "wine", "features": [1, 2.5]}'
    values = [good, b'{"model": "wine", "features": [1, true]}', good, b"[1]"]
    got = _outcomes(decode_records(values, max_bytes=LIMIT))
    assert got == [DataRecord(None, "wine", [1, 2.5]), "non_numeric", got[0], "not_an_object"]


# --- model messages ------------------------------------------------------------


def _doc(**overrides: Any) -> bytes:
    doc: dict[str, Any] = {"name": "wine", "version": "1", "data": "AAAA", "sha256": SHA}
    doc.update(overrides)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def test_parse_model_message_valid() -> None:
    message = parse_model_message(b"wine", _doc(metadata={"feature_names": ["a", "b"]}))
    assert (message.name, message.version, message.format) == ("wine", "1", "onnx")
    assert message.feature_names == ["a", "b"]
    assert message.artifact_bytes(10) == b"\x00\x00\x00"


def test_parse_model_message_without_key() -> None:
    assert parse_model_message(None, _doc()).name == "wine"


@pytest.mark.parametrize(
    "value",
    [
        b"\x00\x01garbage",
        b"",
        b"[]",
        _doc(name=""),
        orjson.dumps({"name": "wine", "data": "AAAA", "sha256": SHA}),  # no version
        orjson.dumps({"name": "wine", "version": "1", "data": "AAAA"}),  # no sha256
        _doc(data=None),  # neither data nor location
        _doc(location="file:///tmp/m.onnx"),  # both
        _doc(sha256="not-a-digest"),
        _doc(sha256="g" * 64),
        _doc(sha256="ab" * 31),
    ],
)
def test_parse_model_message_invalid(value: bytes) -> None:
    with pytest.raises(errors.InvalidModelMessage) as info:
        parse_model_message(b"wine", value)
    assert info.value.reason == "invalid_message"


def test_parse_model_message_key_must_match_name() -> None:
    with pytest.raises(errors.InvalidModelMessage, match="differs from name"):
        parse_model_message(b"iris", _doc())


def test_parse_model_message_refuses_pickle_format() -> None:
    with pytest.raises(errors.UnsupportedFormat) as info:
        parse_model_message(b"wine", _doc(format="pickle"))
    assert info.value.reason == "unsupported_format"


def test_encode_model_message_round_trips(make_message: MessageFactory) -> None:
    message = make_message(version="7")
    encoded = encode_model_message(message)
    assert b"signature" not in encoded  # None fields are left out
    again = parse_model_message(b"wine", encoded)
    assert again == message
    assert again.artifact_bytes(10_000_000) == message.artifact_bytes(10_000_000)


@FUZZ
@given(st.binary(max_size=300))
def test_parse_model_message_arbitrary_bytes_only_rejects(value: bytes) -> None:
    try:
        message = parse_model_message(None, value)
    except errors.ModelRejected:
        return
    assert isinstance(message, ModelMessage)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.text(max_size=8) | _json,
            "version": st.text(max_size=8) | _json,
            "format": st.sampled_from(["onnx", "pickle", "pmml"]) | _json,
            "data": st.text(max_size=8) | _json,
            "location": st.text(max_size=8) | _json,
            "sha256": st.sampled_from([SHA, SHA.upper(), "x" * 64]) | _json,
            "metadata": _json,
            "signature": _json,
            "published_at": st.sampled_from(["2024-01-01T00:00:00Z", "yesterday"]) | _json,
        },
    ),
    st.none() | st.binary(max_size=8),
)
def test_parse_model_message_arbitrary_objects_only_rejects(
    doc: dict[str, Any], key: bytes | None
) -> None:
    try:
        message = parse_model_message(key, json.dumps(doc).encode())
    except errors.ModelRejected:
        return
    assert message.format == "onnx"
    assert (message.data is None) != (message.location is None)


@pytest.mark.parametrize("name", ["team/fraud", ".", "..", "tab\there", "x" * 201, ""])
def test_publish_refuses_a_model_name_no_url_can_reach(tmp_path: Path, name: str) -> None:
    """A name is one path segment of /v2/models/{name}/infer: clients do not escape `/`
    and collapse `.` and `..`. Refused before anything is converted or uploaded."""
    from service.tools.errors import ToolError
    from service.tools.publish import PublishRequest
    from service.tools.publishing import prepare

    with pytest.raises(ToolError, match="name"):
        prepare(PublishRequest(tmp_path / "absent.onnx", name, "1"), None)


def test_messages_already_on_the_topic_keep_any_name(make_message: MessageFactory) -> None:
    """A deployment that has ``team/fraud`` on its model topic still serves it (over Kafka)."""
    doc = {**make_message().model_dump(), "name": "team/fraud"}
    assert parse_model_message(b"team/fraud", orjson.dumps(doc)).name == "team/fraud"
