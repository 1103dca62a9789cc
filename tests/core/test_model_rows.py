"""Models whose outputs do not have a row per input row: no record may go missing for them.
And models whose rows are too wide for a record: refused, their warm-up bounded.

Scored records are zipped from the model's outputs and the batch's records, so a model
that returns fewer rows than it was given (valid ONNX: a ``Slice`` on the batch axis)
once dropped the records beyond them while their offsets were committed. Such a model is
refused when its warm-up shows it (two batch sizes), and when it shows only on other
sizes its batches are scored row by row, every record accounted for.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest
from onnx import TensorProto, helper

from service.core import errors
from service.core.checks import MAX_VALUES_A_ROW
from service.core.outputs import DeadLetter
from service.core.registry import BuildLimits, ModelRegistry
from service.core.scoring import InputRecord, Scored, Scorer
from tests.models import BuiltModel, MessageFactory
from tests.onnxgraphs import endless_body, endless_for_ones, rows_model

_WARMUP_ROWS = 64  # ModelRegistry's default warm-up batch
#: Deadlines a good run meets however loaded the machine; an endless one waits them out.
DEADLINE = 10.0


def _first_rows(count: int) -> bytes:
    """y = x[:count]: fewer rows than given for any batch larger than ``count``."""
    ints = TensorProto.INT64
    inits = [
        helper.make_tensor("starts", ints, [1], [0]),
        helper.make_tensor("ends", ints, [1], [count]),
        helper.make_tensor("axes", ints, [1], [0]),
    ]
    return rows_model([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])], inits)


def _constant_rows(count: int) -> bytes:
    """y = ``count`` rows of zeros, whatever the batch."""
    value = helper.make_tensor("value", TensorProto.FLOAT, [count, 2], [0.0] * (2 * count))
    return rows_model([helper.make_node("Constant", [], ["y"], value=value)], [])


def _scorer(make_message: MessageFactory, artifact: bytes) -> Scorer:
    registry = ModelRegistry()
    message = make_message(artifact=artifact, metadata={"feature_names": ["a", "b"]})
    registry.install(registry.build(message))
    return Scorer(registry, max_record_bytes=1_000_000)


@pytest.mark.parametrize("named", [False, True], ids=["fast-path", "general-path"])
def test_a_model_returning_fewer_rows_than_records_loses_none(
    make_message: MessageFactory, named: bool
) -> None:
    """It passes its warm-up (64 rows and 1), then gets a batch of 100."""
    scorer = _scorer(make_message, _first_rows(_WARMUP_ROWS))
    features = [{"a": float(i), "b": 1.0} if named else [float(i), 1.0] for i in range(100)]
    records = [
        InputRecord(
            key=b"%d" % i,
            value=orjson.dumps({"id": i, "model": "wine", "features": features[i]}),
            topic="records",
            partition=0,
            offset=i,
        )
        for i in range(100)
    ]
    result = scorer.score(records)
    assert [o.source.offset for o in result.outputs] == list(range(100))
    assert all(isinstance(o, Scored) for o in result.outputs)
    docs = [orjson.loads(o.value or b"") for o in result.outputs]
    assert [d["id"] for d in docs] == list(range(100))
    assert [d["outputs"]["y"][0] for d in docs] == [float(i) for i in range(100)]


@pytest.mark.parametrize(
    "artifact",
    [_first_rows(3), _constant_rows(_WARMUP_ROWS), _constant_rows(1)],
    ids=["fewer-rows", "always-64-rows", "always-1-row"],
)
@pytest.mark.parametrize(
    "samples",
    [None, {"inputs": [], "labels": []}, {"inputs": [[1.0, 2.0]]}],
    ids=["no-samples", "no-sample-rows", "one-sample-row"],
)
def test_a_model_whose_rows_are_not_its_inputs_is_refused_at_warm_up(
    make_message: MessageFactory, artifact: bytes, samples: dict[str, Any] | None
) -> None:
    """Published samples replace the warm-up's zeros; too few of them (an empty list once
    skipped every run) still leave it the zeros' batch and one row."""
    metadata = {} if samples is None else {"samples": samples}
    with pytest.raises(errors.WarmupFailed, match="rows for a batch of"):
        ModelRegistry().build(make_message(artifact=artifact, metadata=metadata))


def test_a_model_with_a_fixed_batch_size_is_refused(make_message: MessageFactory) -> None:
    artifact = rows_model([helper.make_node("Identity", ["x"], ["y"])], [], batch=_WARMUP_ROWS)
    with pytest.raises(errors.IncompatibleInputs, match="fixed batch size of 64"):
        ModelRegistry().build(make_message(artifact=artifact, metadata={}))


@pytest.mark.parametrize(
    ("classes", "match"),
    [([0], "names 1 classes but output"), ([0, 1, 2, 3], "names 4 classes"),
     (["a", "a", "b"], "distinct"), ([1, "1", 2], "distinct")],
    ids=["too-few", "too-many", "repeated", "same-as-text"],
)  # fmt: skip
def test_metadata_classes_name_each_probability_column_once(
    make_message: MessageFactory, wine_model: BuiltModel, classes: list[Any], match: str
) -> None:
    """The wine classifier has 3 probability columns; scored records key them by class."""
    metadata = {**wine_model.metadata(samples=False), "classes": classes}
    with pytest.raises(errors.WarmupFailed, match=match):
        ModelRegistry().build(make_message(metadata=metadata))


def test_the_published_classes_still_serve(
    make_message: MessageFactory, wine_model: BuiltModel
) -> None:
    model = ModelRegistry().build(make_message(metadata=wine_model.metadata()))
    assert model.runtime.signature.classes == tuple(wine_model.classes)
    assert np.asarray(wine_model.sample_inputs).shape[1] == model.runtime.signature.width


def _endless() -> bytes:
    """y = x after a Loop of 10^12 turns: valid ONNX, 272 bytes, and it never ends."""
    t = TensorProto
    inits = [
        helper.make_tensor("turns", t.INT64, [], [10**12]),
        helper.make_tensor("go", t.BOOL, [], [True]),
    ]
    return rows_model(
        [helper.make_node("Loop", ["turns", "go", "x"], ["y"], body=endless_body())], inits
    )


def test_a_warm_up_that_never_ends_is_stopped_and_refused(make_message: MessageFactory) -> None:
    """Without a deadline it held a load thread for ever (and, at start, the replay)."""
    registry = ModelRegistry(limits=BuildLimits(warmup_seconds=DEADLINE))
    started = time.monotonic()
    with pytest.raises(errors.WarmupFailed, match=rf"stopped after {DEADLINE:g} s"):
        registry.build(make_message(artifact=_endless(), metadata={}))
    assert time.monotonic() - started < 60  # an upper bound: the loop alone takes hours
    served = ModelRegistry(limits=BuildLimits(warmup_seconds=DEADLINE))
    served.build(make_message(artifact=_first_rows(_WARMUP_ROWS), metadata={}))  # still builds


@pytest.mark.parametrize("named", [False, True], ids=["fast-path", "general-path"])
def test_a_record_that_makes_the_model_run_for_ever_is_dead_lettered_and_the_rest_scored(
    make_message: MessageFactory, named: bool
) -> None:
    """The model passed its warm-up (zeros); a record's values make its run endless. Without
    a deadline that run held the scoring thread, and the stream, for hours."""
    registry = ModelRegistry(limits=BuildLimits(run_seconds=DEADLINE))
    message = make_message(artifact=endless_for_ones(), metadata={"feature_names": ["a", "b"]})
    registry.install(registry.build(message))
    scorer = Scorer(registry, max_record_bytes=1_000_000)
    values = [0.0, 0.0, 1.0, 0.0, 0.0]
    records = [
        InputRecord(
            key=b"%d" % i,
            value=orjson.dumps(
                {"id": i, "model": "wine", "features": {"a": v, "b": 0} if named else [v, 0.0]}
            ),
            topic="records",
            partition=0,
            offset=i,
        )
        for i, v in enumerate(values)
    ]
    outputs = scorer.score(records).outputs
    assert [o.source.offset for o in outputs] == list(range(5))
    assert [isinstance(o, Scored) for o in outputs] == [True, True, False, True, True]
    letter = outputs[2]
    assert isinstance(letter, DeadLetter), letter
    assert letter.reason == "scoring_failed"
    assert f"stopped after {DEADLINE:g} s" in letter.detail


def _identity(width: int) -> bytes:
    """y = x, for rows of ``width`` floats: 73 bytes whatever the width."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, width])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "wide", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _tiled(times: int) -> bytes:
    """y = x repeated ``times`` times along each row: 2 inputs, 2 * times outputs a row."""
    repeats = helper.make_tensor("repeats", TensorProto.INT64, [2], [1, times])
    return rows_model([helper.make_node("Tile", ["x", "repeats"], ["y"])], [repeats])


def test_a_wide_model_is_warmed_up_on_fewer_rows(make_message: MessageFactory) -> None:
    """Its warm-up batch holds at most WARMUP_VALUES numbers, not 64 rows of any width."""
    tracemalloc.start()
    try:
        model = ModelRegistry().build(make_message(artifact=_identity(200_000), metadata={}))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.runtime.signature.width == 200_000
    assert peak < 200_000_000, peak  # 64 rows of 200,000: ~2.5 GB (their records rendered)


def test_a_model_too_wide_for_any_record_is_refused(make_message: MessageFactory) -> None:
    with pytest.raises(errors.IncompatibleInputs, match="takes 250001 features a row"):
        ModelRegistry().build(make_message(artifact=_identity(MAX_VALUES_A_ROW + 1), metadata={}))


def test_a_model_giving_more_values_a_row_than_a_record_holds_is_refused(
    make_message: MessageFactory,
) -> None:
    artifact = _tiled(MAX_VALUES_A_ROW)  # 2 inputs, 500,000 outputs a row
    with pytest.raises(errors.WarmupFailed, match="gives 500000 values a row"):
        ModelRegistry().build(make_message(artifact=artifact, metadata={}))


def test_a_model_whose_rows_widen_with_the_batch_is_refused(make_message: MessageFactory) -> None:
    """y = x @ x.T: one value for one row, N for each of N rows (gigabytes at 2,000)."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"]),
        helper.make_node("MatMul", ["x", "xt"], ["y"]),
    ]
    with pytest.raises(errors.WarmupFailed, match="not 64 times as many for 64 rows"):
        ModelRegistry().build(make_message(artifact=rows_model(nodes, []), metadata={}))


def test_published_samples_are_held_to_the_warm_up_bound(make_message: MessageFactory) -> None:
    """30 samples of a model giving 200,000 values a row: only the rows zeros would have."""
    samples = {"inputs": [[0.5, 0.5]] * 30}
    tracemalloc.start()
    try:
        message = make_message(artifact=_tiled(100_000), metadata={"samples": samples})
        ModelRegistry().build(message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000_000, peak  # all 30 rows: ~1.2 GB
