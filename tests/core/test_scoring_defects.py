"""Defects no decoding check names: each costs its own record (or its model), never the stream.

The data feed reads a batch again when scoring raises; a record that makes
scoring raise every time would hold its partition forever while ``/ready``
answers 200. So the scorer never raises for a record: what fails as a batch
is scored record by record, and a record that still fails is dead-lettered
``scoring_failed``. Where the defect is the model's, the model is refused
when it is built, and the version serving keeps serving.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import orjson
import pytest
from onnx import TensorProto, helper

from service.core import errors, outputs, scoring
from service.core.registry import ModelRegistry, ServingModel
from service.core.runtime import ModelRuntime, Signature, TensorSpec
from service.core.runtime.base import Outputs
from service.core.scoring import DeadLetter, InputRecord, Scored, Scorer
from tests.models import BuiltModel, MessageFactory


def _record(value: bytes | dict[str, Any], offset: int) -> InputRecord:
    data = value if isinstance(value, bytes) else orjson.dumps(value)
    return InputRecord(key=b"k%d" % offset, value=data, topic="records", partition=0, offset=offset)


def _kinds(outputs: list[Scored | DeadLetter]) -> list[tuple[int, str]]:
    """(source offset, "scored" or the dead-letter reason), in output order."""
    return [
        (o.source.offset, "scored" if isinstance(o, Scored) else o.reason)
        for o in outputs  # type: ignore[union-attr]
    ]


@pytest.fixture
def wine(make_message: MessageFactory) -> Scorer:
    registry = ModelRegistry()
    registry.install(registry.build(make_message()))
    return Scorer(registry, max_record_bytes=1_000_000)


def _double_identity(width: int) -> bytes:
    """A model taking doubles: its one output is its input."""
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, width])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, width])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "double", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_a_record_whose_id_cannot_be_written_back_is_dead_lettered_alone(
    wine: Scorer, wine_model: BuiltModel
) -> None:
    row = wine_model.sample_inputs[0]
    surrogate = b'{"id": "\\ud800", "model": "wine", "features": %s}' % orjson.dumps(row)
    deep = {"id": [[[[]]]], "model": "wine", "features": row}  # made deeper below
    deep_value = orjson.dumps(deep).replace(b"[[[[]]]]", b"[" * 300 + b"]" * 300)
    batch = [
        _record({"id": 0, "model": "wine", "features": row}, 0),
        _record(surrogate, 1),
        _record({"id": "two", "model": "wine", "features": row}, 2),
        _record(deep_value, 3),
        _record({"id": 4, "model": "wine", "features": row}, 4),
    ]
    result = wine.score(batch)
    assert _kinds(result.outputs) == [
        (0, "scored"),
        (1, "scoring_failed"),
        (2, "scored"),
        (3, "scoring_failed"),
        (4, "scored"),
    ]
    assert [
        orjson.loads(o.value or b"")["id"] for o in result.outputs if isinstance(o, Scored)
    ] == [
        0,
        "two",
        4,
    ]
    letter = result.outputs[1]
    assert isinstance(letter, DeadLetter)
    assert letter.value == surrogate  # the record as it came
    assert letter.detail  # names the exception


def test_any_failure_of_a_batch_costs_only_the_records_that_fail_alone(
    wine: Scorer, wine_model: BuiltModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The class, not the instances above: whatever raises while a batch is scored."""
    real = outputs.scored_all

    def scored_all(model: ServingModel, records: list[InputRecord], *rest: Any) -> list[Scored]:
        if any(orjson.loads(r.value or b"").get("id") == "boom" for r in records):
            raise RuntimeError("a defect nobody foresaw")
        return real(model, records, *rest)

    monkeypatch.setattr(scoring, "scored_all", scored_all)
    row = wine_model.sample_inputs[0]
    names = dict(zip(wine_model.feature_names, row))
    batch = [  # the fast path (a list of features) and the general one (named features)
        _record({"id": i, "model": "wine", "features": row if i % 2 else names}, i)
        for i in range(6)
    ]
    batch[3] = _record({"id": "boom", "model": "wine", "features": row}, 3)
    result = wine.score(batch)
    assert _kinds(result.outputs) == [
        (i, "scoring_failed" if i == 3 else "scored") for i in range(6)
    ]
    letter = result.outputs[3]
    assert isinstance(letter, DeadLetter)
    assert letter.detail == "RuntimeError: a defect nobody foresaw"


def test_a_value_beyond_float32_is_refused_as_non_finite(
    wine: Scorer, wine_model: BuiltModel
) -> None:
    """1e39 is a finite JSON number and infinity as float32: scored, it would give nulls."""
    row = wine_model.sample_inputs[0]
    named = dict(zip(wine_model.feature_names, row))
    for features, big in ((row, [1e39, *row[1:]]), (named, {**named, "alcohol": -3.5e38})):
        batch = [
            _record({"id": 0, "model": "wine", "features": features}, 0),
            _record({"id": 1, "model": "wine", "features": big}, 1),
            _record({"id": 2, "model": "wine", "features": features}, 2),
        ]
        result = wine.score(batch)
        assert _kinds(result.outputs) == [(0, "scored"), (1, "non_finite"), (2, "scored")]
        scored = [orjson.loads(o.value or b"") for o in result.outputs if isinstance(o, Scored)]
        assert all(None not in doc["probabilities"].values() for doc in scored)


def test_a_model_taking_doubles_gets_its_features_in_double_precision(
    make_message: MessageFactory,
) -> None:
    registry = ModelRegistry()
    artifact = _double_identity(2)
    registry.install(registry.build(make_message(artifact=artifact, metadata={})))
    scorer = Scorer(registry, max_record_bytes=1_000_000)
    rows = [[0.1, 0.2], [1e39, -1e300]]  # neither survives a trip through float32
    for batch in ([_record({"model": "wine", "features": r}, i) for i, r in enumerate(rows)],):
        result = scorer.score(batch)
        assert _kinds(result.outputs) == [(0, "scored"), (1, "scored")]
        assert [orjson.loads(o.value or b"")["outputs"]["y"] for o in result.outputs] == rows


def test_a_default_skl2onnx_classifier_with_a_zipmap_is_served(
    make_message: MessageFactory,
) -> None:
    """skl2onnx's default output for a classifier is a ZipMap: one {class: probability}
    map per row, with int keys for int classes."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    estimator = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    artifact = to_onnx(estimator, x[:1]).SerializeToString()
    registry = ModelRegistry()
    registry.install(registry.build(make_message(artifact=artifact, metadata={})))
    result = Scorer(registry, max_record_bytes=1_000_000).score(
        [_record({"id": "a", "model": "wine", "features": [2.0, 0.0]}, 0)]
    )
    assert _kinds(result.outputs) == [(0, "scored")]
    doc = orjson.loads(result.outputs[0].value or b"")
    assert doc["label"] == 1
    (probabilities,) = doc["outputs"].values()
    assert set(probabilities) == {"0", "1"}
    assert probabilities["1"] > 0.5


class _ComplexRuntime(ModelRuntime):
    """Predicts fine, but its outputs are nothing a JSON document can hold."""

    signature = Signature(
        inputs=(TensorSpec("x", "tensor(float)", (None, 2)),),
        outputs=(TensorSpec("y", "tensor(complex64)", (None,)),),
        width=2,
    )

    def predict(self, batch: npt.NDArray[np.floating[Any]]) -> Outputs:
        return {"y": batch[:, 0].astype(np.complex64)}

    def close(self) -> None:
        pass


def test_a_model_whose_outputs_cannot_be_written_is_refused_when_built(
    make_message: MessageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.core import registry as registry_module

    monkeypatch.setattr(registry_module, "load_runtime", lambda *a, **k: _ComplexRuntime())
    with pytest.raises(errors.WarmupFailed, match="cannot be written as scored records"):
        ModelRegistry().build(make_message(metadata={}))


@pytest.mark.parametrize(
    "names",
    [list(range(13)), ["a"] * 13, [None] * 13, [{"n": i} for i in range(13)]],
    ids=["ints", "repeated", "nulls", "objects"],
)
def test_feature_names_must_be_distinct_strings(
    make_message: MessageFactory, wine_model: BuiltModel, names: list[Any]
) -> None:
    metadata = {**wine_model.metadata(), "feature_names": names}
    with pytest.raises(errors.IncompatibleInputs, match="distinct strings"):
        ModelRegistry().build(make_message(metadata=metadata))
