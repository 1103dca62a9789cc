"""The ONNX runtime: what it loads, what it refuses, and what it says about a model."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.core import errors
from service.core.runtime import ModelRuntime, OnnxModel, TensorSpec, load_runtime
from service.core.runtime.onnx import looks_like_pickle
from tests.models import BuiltModel


class _CreatesFile:
    """Unpickling this opens (so creates) ``path``: the classic pickle payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _identity_model(
    shape: list[int | str | None], elem: int = TensorProto.FLOAT, n: int = 1
) -> bytes:
    """A hand-built ONNX graph of ``n`` Identity nodes, one per input."""
    inputs = [helper.make_tensor_value_info(f"x{i}", elem, shape) for i in range(n)]
    outputs = [helper.make_tensor_value_info(f"y{i}", elem, shape) for i in range(n)]
    nodes = [helper.make_node("Identity", [f"x{i}"], [f"y{i}"]) for i in range(n)]
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def test_loads_classifier_signature(wine_model: BuiltModel) -> None:
    runtime = OnnxModel(
        wine_model.onnx, feature_names=wine_model.feature_names, classes=wine_model.classes
    )
    sig = runtime.signature
    assert sig.width == 13
    assert sig.label_output == "label"
    assert sig.probability_output == "probabilities"
    assert sig.classes == (0, 1, 2)
    assert sig.feature_names == tuple(wine_model.feature_names)
    assert sig.feature_names[0] == "alcohol"
    assert sig.inputs == (TensorSpec("X", "tensor(float)", (None, 13)),)
    assert [o.name for o in sig.outputs] == ["label", "probabilities"]
    assert sig.as_dict()["width"] == 13


def test_signature_without_metadata(wine_model: BuiltModel) -> None:
    sig = OnnxModel(wine_model.onnx).signature
    assert (sig.feature_names, sig.classes) == (None, None)
    assert sig.width == 13


def test_predict_shapes_and_labels(wine_model: BuiltModel) -> None:
    runtime = OnnxModel(wine_model.onnx)
    batch = np.asarray(wine_model.sample_inputs, dtype=np.float32)
    out = runtime.predict(batch)
    assert set(out) == {"label", "probabilities"}
    assert out["label"].shape == (9,)
    assert out["probabilities"].shape == (9, 3)
    assert out["label"].tolist() == wine_model.sample_labels
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)


def test_predict_accepts_float64(wine_model: BuiltModel) -> None:
    runtime = OnnxModel(wine_model.onnx)
    out = runtime.predict(np.asarray(wine_model.sample_inputs, dtype=np.float64))  # type: ignore[arg-type]
    assert out["label"].tolist() == wine_model.sample_labels


def test_regressor_has_no_label_output() -> None:
    runtime = OnnxModel(_identity_model([None, 3]))
    assert runtime.signature.width == 3
    assert (runtime.signature.label_output, runtime.signature.probability_output) == (None, None)
    out = runtime.predict(np.ones((2, 3), dtype=np.float32))
    assert out["y0"].tolist() == [[1.0, 1.0, 1.0]] * 2


@pytest.mark.parametrize("artifact", [b"this is not onnx", b"\x00" * 64, b"\x08\x07garbage"])
def test_garbage_is_invalid_model(artifact: bytes) -> None:
    with pytest.raises(errors.InvalidModel) as info:
        OnnxModel(artifact)
    assert info.value.reason == "invalid_onnx"


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_refused_without_running_it(tmp_path: Path, protocol: int) -> None:
    # The payload is real: unpickling it does create its file.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_CreatesFile(control), protocol=protocol)).close()
    assert control.exists()

    target = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFile(target), protocol=protocol)
    assert looks_like_pickle(payload)
    with pytest.raises(errors.PickleRefused) as info:
        load_runtime("onnx", payload, metadata={})
    assert info.value.reason == "pickle_refused"
    assert not target.exists()


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_protocol_pickle_is_not_executed(tmp_path: Path, protocol: int) -> None:
    target = tmp_path / "pwned"
    with pytest.raises(errors.ModelRejected):
        OnnxModel(pickle.dumps(_CreatesFile(target), protocol=protocol))
    assert not target.exists()


def test_feature_names_length_mismatch(wine_model: BuiltModel) -> None:
    with pytest.raises(errors.IncompatibleInputs, match="names 4 features but the model takes 13"):
        OnnxModel(wine_model.onnx, feature_names=["a", "b", "c", "d"])


def test_metadata_feature_names_length_mismatch_via_load_runtime(wine_model: BuiltModel) -> None:
    with pytest.raises(errors.IncompatibleInputs):
        load_runtime("onnx", wine_model.onnx, metadata={"feature_names": ["only-one"]})


@pytest.mark.parametrize(
    ("shape", "elem", "n"),
    [
        ([None, None], TensorProto.FLOAT, 1),  # free width
        ([None, 2, 2], TensorProto.FLOAT, 1),  # not 2-D
        ([None, 3], TensorProto.INT64, 1),  # not float
        ([None, 3], TensorProto.FLOAT, 2),  # two inputs
    ],
)
def test_unusable_inputs_are_incompatible(shape: list[int | str | None], elem: int, n: int) -> None:
    with pytest.raises(errors.IncompatibleInputs):
        OnnxModel(_identity_model(shape, elem, n))


def test_double_input_model_is_accepted() -> None:
    runtime = OnnxModel(_identity_model([None, 2], TensorProto.DOUBLE))
    out = runtime.predict(np.asarray([[1.5, 2.5]], dtype=np.float32))
    assert out["y0"].dtype == np.float64
    assert out["y0"].tolist() == [[1.5, 2.5]]


@pytest.mark.parametrize("fmt", ["pmml", "pickle", "ONNX", ""])
def test_load_runtime_unsupported_format(wine_model: BuiltModel, fmt: str) -> None:
    with pytest.raises(errors.UnsupportedFormat) as info:
        load_runtime(fmt, wine_model.onnx, metadata={})
    assert info.value.reason == "unsupported_format"


def test_load_runtime_reads_metadata(wine_model: BuiltModel) -> None:
    runtime: ModelRuntime = load_runtime("onnx", wine_model.onnx, metadata=wine_model.metadata())
    assert runtime.signature.classes == (0, 1, 2)
    assert runtime.signature.feature_names == tuple(wine_model.feature_names)
    runtime.close()


def test_load_runtime_ignores_malformed_metadata(wine_model: BuiltModel) -> None:
    runtime = load_runtime(
        "onnx", wine_model.onnx, metadata={"feature_names": "alcohol", "classes": 3}
    )
    assert (runtime.signature.feature_names, runtime.signature.classes) == (None, None)


def test_closed_model_cannot_predict(wine_model: BuiltModel) -> None:
    runtime = OnnxModel(wine_model.onnx)
    runtime.close()
    with pytest.raises(AttributeError):
        runtime.predict(np.zeros((1, 13), dtype=np.float32))
