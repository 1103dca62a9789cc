"""The transport-free scorer: input order, one predict per model per batch, dead letters."""

from __future__ import annotations

import gc
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.registry import ModelRegistry, ServingModel
from service.core.runtime import ModelRuntime, Signature, TensorSpec
from service.core.runtime.base import Outputs
from service.core.scoring import DeadLetter, InputRecord, Scored, Scorer
from tests.models import BuiltModel, MessageFactory

POISON = -999.0


class CountingRuntime(ModelRuntime):
    """Delegates to a real runtime and counts predict calls."""

    def __init__(self, inner: ModelRuntime) -> None:
        self.inner = inner
        self.signature = inner.signature
        self.batches: list[int] = []

    def predict(self, batch: npt.NDArray[np.float32]) -> Outputs:
        self.batches.append(len(batch))
        return self.inner.predict(batch)

    def close(self) -> None:
        self.inner.close()


class PoisonRuntime(ModelRuntime):
    """A 2-feature regressor that fails on any batch holding a row starting with POISON."""

    signature = Signature(
        inputs=(TensorSpec("x", "tensor(float)", (None, 2)),),
        outputs=(TensorSpec("y", "tensor(float)", (None,)),),
        width=2,
    )

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, batch: npt.NDArray[np.float32]) -> Outputs:
        self.batches.append(len(batch))
        if (batch[:, 0] == POISON).any():
            raise RuntimeError("poisoned row")
        return {"y": batch.sum(axis=1)}

    def close(self) -> None:
        pass


def _install(
    registry: ModelRegistry, make_message: MessageFactory, runtime: ModelRuntime, **kw: Any
) -> ServingModel:
    model = ServingModel(message=make_message(**kw), runtime=runtime)
    registry.install(model)
    return model


@pytest.fixture
def wine_runtime(make_message: MessageFactory) -> CountingRuntime:
    built = ModelRegistry().build(make_message(version="1"))
    return CountingRuntime(built.runtime)


@pytest.fixture
def registry(make_message: MessageFactory, wine_runtime: CountingRuntime) -> ModelRegistry:
    registry = ModelRegistry()
    _install(registry, make_message, wine_runtime, version="1")
    return registry


def _record(doc: Any, offset: int, key: bytes | None = None) -> InputRecord:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return InputRecord(key=key, value=value, topic="records", partition=3, offset=offset)


def _headers(out: Scored | DeadLetter) -> dict[str, bytes]:
    return dict(out.headers)


def test_mixed_batch(
    registry: ModelRegistry, wine_model: BuiltModel, wine_runtime: CountingRuntime
) -> None:
    rows = wine_model.sample_inputs
    names = wine_model.feature_names
    named = dict(zip(names, rows[4]))
    inputs = [
        _record({"id": "p0", "model": "wine", "features": rows[0]}, 10, key=b"k0"),
        _record({"id": "bad-count", "model": "wine", "features": rows[1][:5]}, 11),
        _record({"id": "n4", "model": "wine", "features": named}, 12),
        _record({"id": "who", "model": "nope", "features": rows[2]}, 13, key=b"k3"),
        _record({"id": "miss", "model": "wine", "features": dict(list(named.items())[1:])}, 14),
        _record({"id": "extra", "model": "wine", "features": {**named, "colour": 1.0}}, 15),
        _record(b'{"id": "broken", "model": "wine", ', 16, key=b"k6"),
        _record({"id": 7, "model": "wine", "features": rows[7]}, 17),
    ]
    result = Scorer(registry, max_record_bytes=10_000).score(inputs)

    assert len(result.outputs) == len(inputs)
    assert [out.source.offset for out in result.outputs] == list(range(10, 18))
    expected: list[tuple[type, str | int]] = [
        (Scored, 0),
        (DeadLetter, "wrong_feature_count"),
        (Scored, 4),
        (DeadLetter, "unknown_model"),
        (DeadLetter, "missing_feature"),
        (DeadLetter, "unknown_feature"),
        (DeadLetter, "invalid_json"),
        (Scored, 7),
    ]
    for out, record, (kind, what) in zip(result.outputs, inputs, expected):
        assert type(out) is kind
        assert out.key == record.key
        headers = _headers(out)
        assert headers["hotswap-source-topic"] == b"records"
        assert headers["hotswap-source-partition"] == b"3"
        assert headers["hotswap-source-offset"] == str(record.offset).encode()
        if isinstance(out, DeadLetter):
            assert out.value == record.value  # untouched bytes
            assert out.reason == what
            assert headers["hotswap-reason"] == str(what).encode()
            assert headers["hotswap-error"] == out.detail.encode()
            continue
        assert isinstance(out, Scored)
        assert (headers["hotswap-model"], headers["hotswap-version"]) == (b"wine", b"1")
        doc = orjson.loads(out.value)
        assert set(doc) == {"id", "model", "version", "label", "probabilities", "scored_at"}
        assert doc["id"] == orjson.loads(record.value or b"")["id"]
        assert (doc["model"], doc["version"]) == ("wine", "1")
        assert doc["label"] == wine_model.sample_labels[int(what)]
        assert set(doc["probabilities"]) == {"0", "1", "2"}
        assert sum(doc["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert doc["scored_at"].endswith("+00:00")

    assert wine_runtime.batches == [3]
    assert [(c.model, c.version, c.rows) for c in result.calls] == [("wine", "1", 3)]
    assert result.calls[0].seconds >= 0


def test_one_call_per_model_per_batch(
    registry: ModelRegistry,
    make_message: MessageFactory,
    wine_model: BuiltModel,
    four_feature_model: BuiltModel,
    wine_runtime: CountingRuntime,
) -> None:
    iris_built = ModelRegistry().build(make_message(four_feature_model, name="iris"))
    iris_runtime = CountingRuntime(iris_built.runtime)
    _install(registry, make_message, iris_runtime, model=four_feature_model, name="iris")
    inputs = []
    for i in range(12):
        if i % 3 == 0:
            doc = {"id": i, "model": "iris", "features": four_feature_model.sample_inputs[i % 8]}
        else:
            doc = {"id": i, "model": "wine", "features": wine_model.sample_inputs[i % 9]}
        inputs.append(_record(doc, i))
    result = Scorer(registry, max_record_bytes=10_000).score(inputs)

    assert (wine_runtime.batches, iris_runtime.batches) == ([8], [4])
    assert sorted((c.model, c.rows) for c in result.calls) == [("iris", 4), ("wine", 8)]
    models = [orjson.loads(out.value)["model"] for out in result.outputs if isinstance(out, Scored)]
    assert models == ["iris" if i % 3 == 0 else "wine" for i in range(12)]
    assert [
        orjson.loads(out.value)["id"] for out in result.outputs if isinstance(out, Scored)
    ] == list(range(12))
    wine = registry.get("wine")
    assert wine is not None
    assert (wine.stats.records, wine.stats.calls) == (8, 1)


def test_row_that_breaks_the_model_is_isolated(
    registry: ModelRegistry, make_message: MessageFactory
) -> None:
    runtime = PoisonRuntime()
    _install(registry, make_message, runtime, name="poison", metadata={})
    inputs = [
        _record({"id": 0, "model": "poison", "features": [1, 2]}, 0),
        _record({"id": 1, "model": "poison", "features": [POISON, 2]}, 1, key=b"bad"),
        _record({"id": 2, "model": "poison", "features": [3, 4]}, 2),
    ]
    result = Scorer(registry, max_record_bytes=10_000).score(inputs)

    assert [type(out) for out in result.outputs] == [Scored, DeadLetter, Scored]
    bad = result.outputs[1]
    assert isinstance(bad, DeadLetter)
    assert (bad.reason, bad.key, bad.value) == ("scoring_failed", b"bad", inputs[1].value)
    assert _headers(bad)["hotswap-reason"] == b"scoring_failed"
    assert "poisoned row" in bad.detail
    docs = [orjson.loads(out.value) for out in result.outputs if isinstance(out, Scored)]
    assert [(d["id"], d["outputs"]) for d in docs] == [(0, {"y": 3.0}), (2, {"y": 7.0})]
    assert all("label" not in d and "probabilities" not in d for d in docs)
    assert runtime.batches == [3, 1, 1, 1]
    assert [c.rows for c in result.calls] == [1, 1]


def test_default_model_routes_records_without_model(
    registry: ModelRegistry, wine_model: BuiltModel
) -> None:
    inputs = [_record({"features": wine_model.sample_inputs[6]}, 0)]
    [out] = Scorer(registry, max_record_bytes=10_000, default_model="wine").score(inputs).outputs
    assert isinstance(out, Scored)
    assert orjson.loads(out.value)["label"] == wine_model.sample_labels[6]
    [dead] = Scorer(registry, max_record_bytes=10_000).score(inputs).outputs
    assert isinstance(dead, DeadLetter)
    assert dead.reason == "missing_model"


def test_named_features_need_model_feature_names(
    registry: ModelRegistry, make_message: MessageFactory
) -> None:
    _install(registry, make_message, PoisonRuntime(), name="anon", metadata={})
    [out] = (
        Scorer(registry, max_record_bytes=10_000)
        .score([_record({"model": "anon", "features": {"a": 1, "b": 2}}, 0)])
        .outputs
    )
    assert isinstance(out, DeadLetter)
    assert out.reason == "unknown_feature"


def test_null_and_oversize_records(registry: ModelRegistry) -> None:
    inputs = [
        InputRecord(key=b"tomb", value=None, offset=0),
        _record(b'{"model": "wine", "features": [' + b"1," * 100 + b"1]}", 1),
    ]
    result = Scorer(registry, max_record_bytes=50).score(inputs)
    assert [getattr(out, "reason", None) for out in result.outputs] == [
        "null_value",
        "record_too_large",
    ]
    assert result.outputs[0].value is None
    assert result.calls == []


def test_empty_batch(registry: ModelRegistry) -> None:
    result = Scorer(registry, max_record_bytes=10).score([])
    assert (result.outputs, result.calls) == ([], [])


def _comparable(out: Scored | DeadLetter, approx: bool = False) -> tuple[Any, ...]:
    """An output without its ``scored_at`` (two calls a millisecond apart differ there);
    ``approx``: probabilities to 1e-5 (ONNX Runtime's sums vary a little with batch size)."""
    if isinstance(out, DeadLetter):
        return ("dead", out.key, out.value, out.reason, out.detail, out.headers)
    doc = orjson.loads(out.value)
    doc.pop("scored_at")
    if approx and "probabilities" in doc:
        doc["probabilities"] = pytest.approx(doc["probabilities"], rel=1e-5, abs=1e-7)
    return ("scored", out.key, doc, out.headers, out.model, out.version, out.shadow)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=12))
def test_a_batch_scores_as_its_records_would_one_by_one(
    registry: ModelRegistry, wine_model: BuiltModel, kinds: list[int]
) -> None:
    """Uniform batches take a one-pass path, mixed ones the general one: same outputs."""
    rows, names = wine_model.sample_inputs, wine_model.feature_names
    makers: list[Callable[[int], Any]] = [
        lambda i: {"id": i, "model": "wine", "features": rows[i % len(rows)]},
        lambda i: {"id": f"n{i}", "model": "wine", "features": dict(zip(names, rows[0]))},
        lambda i: {"id": i, "model": "wine", "features": rows[0][:3]},  # wrong width
        lambda i: {"id": i, "model": "nope", "features": rows[0]},  # unknown model
        lambda i: {"id": i, "model": "wine", "features": [*rows[0][:-1], True]},
        lambda i: b"{not json",
        lambda i: {"id": [i, {"x": None}], "model": "wine", "features": rows[1]},
    ]
    inputs = [_record(makers[k](i), 100 + i, key=f"k{i}".encode()) for i, k in enumerate(kinds)]
    scorer = Scorer(registry, max_record_bytes=10_000)
    batch = [_comparable(out) for out in scorer.score(inputs).outputs]
    alone = [_comparable(o, True) for record in inputs for o in scorer.score([record]).outputs]
    assert batch == alone


def test_bad_records_leave_no_reference_cycles(registry: ModelRegistry) -> None:
    """A worker runs the cycle collector rarely (see service/kafka/memory.py): a refusal kept
    with its traceback would pin each bad record's bytes in a cycle until it runs."""
    values: list[bytes | None] = [
        b"{not json",
        b'{"model": "wine", "features": [1, NaN]}',
        b"[1]",
        b'{"model": "wine", "features": [true]}',
        b'{"model": "nope", "features": [1]}',
        b"\xff\xfe",
        None,
        b'{"model": "wine", "features": [1, 2]}',
        b'{"model": "wine", "features": {"nope": 1}}',
    ]
    inputs = [_record(v or b"", i) for i, v in enumerate(values)]
    inputs[6].value = None  # a null value, as Kafka delivers it
    scorer = Scorer(registry, max_record_bytes=10_000)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage to look at
    try:
        result = scorer.score(inputs * 20)
        assert len(result.outputs) == len(inputs) * 20
        del result
        gc.collect()
        ours = [  # other threads of the test run may leave garbage of their own meanwhile
            o
            for o in gc.garbage
            if isinstance(o, BaseException)
            or (isinstance(o, types.FrameType) and "service/core" in o.f_code.co_filename)
        ]
        assert ours == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
