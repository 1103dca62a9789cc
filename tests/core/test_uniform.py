"""The batch fast path agrees with the record-by-record decoder on any batch.

:func:`uniform_batch` may give up on any batch, but when it accepts one it
must accept only what :func:`decode_records` accepts, with the same model,
ids and features, and never a record that the decoder would refuse.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.messages import DataRecord, decode_records
from service.core.uniform import uniform_batch

logger = logging.getLogger(__name__)

_number = st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False))
_odd = st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.just([1]), st.just({"a": 1}))


@st.composite
def _batches(draw: st.DrawFn) -> list[bytes | None]:
    """Mostly the usual batch (one model, numbers), with one thing odd now and then."""
    size = draw(st.integers(1, 6))
    width = draw(st.integers(0, 3))
    docs: list[Any] = [
        {
            "id": n,
            "model": "wine",
            "features": draw(st.lists(_number, min_size=width, max_size=width)),
        }
        for n in range(size)
    ]
    values: list[bytes | None] = [orjson.dumps(d) for d in docs]
    at = draw(st.integers(0, size - 1))
    odd = draw(st.sampled_from(["none", "model", "feature", "features", "value", "id"]))
    doc = docs[at]
    if odd == "model":
        doc["model"] = draw(st.sampled_from(["", None, 0, ["x"], "other", "wine"]))
        if doc["model"] is None:
            del doc["model"]
    elif odd == "feature":
        doc["features"] = [*doc["features"], draw(_odd)]
    elif odd == "features":
        doc["features"] = draw(st.sampled_from([None, {"a": 1}, "1,2", 3]))
    elif odd == "id":
        doc["id"] = draw(st.one_of(st.text(max_size=3), st.none(), st.lists(st.integers(0, 3))))
    values[at] = orjson.dumps(doc)
    if odd == "value":
        values[at] = draw(
            st.sampled_from([None, b"", b"[1]", b"{", b"NaN", b'{"features": [1e999]}', b"\xff"])
        )
    return values


def _same(accepted: Any, decoded: list[Any]) -> None:
    assert all(type(d) is DataRecord for d in decoded), decoded
    assert [(d.id, d.model, d.features) for d in decoded] == [
        (i, accepted.model, row) for i, row in zip(accepted.ids, accepted.rows)
    ]


@settings(max_examples=400, deadline=None)
@given(_batches(), st.sampled_from(["", "fallback"]))
def test_what_the_fast_path_accepts_the_decoder_accepts_the_same(
    values: list[bytes | None], default_model: str
) -> None:
    accepted = uniform_batch(values, max_bytes=90, default_model=default_model)
    decoded = decode_records(values, max_bytes=90, default_model=default_model)
    if accepted is not None:
        _same(accepted, decoded)
        assert accepted.records() == decoded


def test_the_usual_batch_takes_the_fast_path() -> None:
    values = [orjson.dumps({"id": i, "model": "wine", "features": [1, 2.5]}) for i in range(5)]
    accepted = uniform_batch(values, max_bytes=100)
    assert accepted is not None
    _same(accepted, decode_records(values, max_bytes=100))
    no_model = [orjson.dumps({"id": 1, "features": [1.0]}), orjson.dumps({"id": 2, "model": ""})]
    assert uniform_batch(no_model[:1], max_bytes=100, default_model="d") is not None
    assert uniform_batch(no_model, max_bytes=100, default_model="d") is None  # no features
