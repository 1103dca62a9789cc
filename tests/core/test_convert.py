"""scikit-learn to ONNX with a parity check, and the publisher's message builder."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from service.core.artifacts import FetchPolicy, fetch_artifact, sha256_hex
from service.core.convert import PARITY_TOLERANCE, ConversionError, sklearn_to_onnx
from service.core.messages import encode_model_message, parse_model_message
from service.core.registry import ModelRegistry
from service.core.runtime import OnnxModel
from service.tools.errors import ToolError
from service.tools.publish import SAMPLE_ROWS_FOR_WARMUP, PublishRequest, build_message


@pytest.fixture(scope="module")
def wine_xy() -> tuple[np.ndarray, np.ndarray]:
    wine = load_wine()
    return wine.data.astype(np.float32), wine.target


@pytest.fixture(scope="module")
def logreg(wine_xy: tuple[np.ndarray, np.ndarray]) -> Pipeline:
    x, y = wine_xy
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)


@pytest.fixture(scope="module")
def trained_logreg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.train import train_model

    return train_model("wine-logreg", tmp_path_factory.mktemp("trained"))


def test_classifier_pipeline(wine_xy: tuple[np.ndarray, np.ndarray], logreg: Pipeline) -> None:
    x, _ = wine_xy
    estimator = logreg
    rows = x[::10]
    converted = sklearn_to_onnx(estimator, rows)
    assert converted.width == 13
    assert converted.classes == [0, 1, 2]
    assert converted.sample_labels is not None
    assert converted.sample_labels == estimator.predict(rows).tolist()
    assert set(converted.sample_labels) == {0, 1, 2}
    assert 0 <= converted.max_abs_diff <= PARITY_TOLERANCE
    runtime = OnnxModel(converted.onnx)
    out = runtime.predict(rows)
    assert out["label"].tolist() == converted.sample_labels
    np.testing.assert_allclose(out["probabilities"], estimator.predict_proba(rows), atol=1e-4)


def test_random_forest_with_string_classes(wine_xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = wine_xy
    names = np.array(["barolo", "grignolino", "barbera"])[y]
    estimator = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, names)
    converted = sklearn_to_onnx(estimator, x[::7])
    assert converted.classes == ["barbera", "barolo", "grignolino"]
    assert converted.sample_labels == estimator.predict(x[::7]).tolist()
    assert converted.max_abs_diff <= PARITY_TOLERANCE
    sig = OnnxModel(converted.onnx).signature
    assert (sig.width, sig.label_output, sig.probability_output) == (13, "label", "probabilities")


def test_default_sample_rows_are_random(wine_xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = wine_xy
    estimator = RandomForestClassifier(n_estimators=5, random_state=1).fit(x, y)
    converted = sklearn_to_onnx(estimator)
    assert converted.sample_labels is not None
    assert len(converted.sample_labels) == 32


def test_regressor() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3))
    estimator = LinearRegression().fit(x, x @ np.array([1.0, -2.0, 0.5]) + 4.0)
    converted = sklearn_to_onnx(estimator)
    assert (converted.width, converted.classes, converted.sample_labels) == (3, None, None)
    assert converted.max_abs_diff <= PARITY_TOLERANCE
    runtime = OnnxModel(converted.onnx)
    assert runtime.signature.label_output is None
    [output] = runtime.predict(np.asarray([[1.0, 1.0, 2.0]], dtype=np.float32)).values()
    assert float(output.reshape(-1)[0]) == pytest.approx(4.0, abs=1e-4)


@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(),
        RandomForestClassifier(),
        make_pipeline(StandardScaler(), LinearRegression()),
    ],
)
def test_unfitted_estimator(estimator: object) -> None:
    with pytest.raises(ConversionError, match="fitted"):
        sklearn_to_onnx(estimator)


def test_sample_rows_of_wrong_width(
    wine_xy: tuple[np.ndarray, np.ndarray], logreg: Pipeline
) -> None:
    with pytest.raises(ConversionError, match="shape"):
        sklearn_to_onnx(logreg, wine_xy[0][:4, :5])
    with pytest.raises(ConversionError, match="shape"):
        sklearn_to_onnx(logreg, wine_xy[0][0])


def test_unconvertible_estimator() -> None:
    class Fitted:
        n_features_in_ = 2

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.zeros(len(x))

    with pytest.raises(ConversionError, match="cannot convert Fitted"):
        sklearn_to_onnx(Fitted())


# --- build_message ---------------------------------------------------------------


def test_build_message_inline(trained_logreg: Path) -> None:
    request = PublishRequest(
        trained_logreg, "wine", "5", description="logreg", metadata={"team": "x"}
    )
    message = build_message(request)
    assert (message.name, message.version, message.format) == ("wine", "5", "onnx")
    assert message.location is None
    assert message.data is not None
    artifact = base64.b64decode(message.data)
    assert sha256_hex(artifact) == message.sha256
    meta = message.metadata
    assert meta["feature_names"] == list(load_wine().feature_names)
    assert message.feature_names == meta["feature_names"]
    assert meta["classes"] == [0, 1, 2]
    assert meta["team"] == "x"
    assert meta["converted_from"] == "Pipeline"
    assert meta["parity_max_abs_diff"] <= PARITY_TOLERANCE
    assert "sample_rows" not in meta
    samples = meta["samples"]
    assert len(samples["inputs"]) == len(samples["labels"]) == SAMPLE_ROWS_FOR_WARMUP
    assert all(len(row) == 13 for row in samples["inputs"])
    # The publisher's message is one the worker accepts, end to end.
    again = parse_model_message(b"wine", encode_model_message(message))
    model = ModelRegistry().build(again)
    assert model.runtime.signature.feature_names == tuple(meta["feature_names"])


def test_build_message_by_reference(trained_logreg: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    message = build_message(PublishRequest(trained_logreg, "wine", "6", store_dir=store))
    assert message.data is None
    assert message.location is not None
    assert message.location.startswith("file://")
    [stored] = list(store.iterdir())
    assert stored.as_uri() == message.location
    assert sha256_hex(stored.read_bytes()) == message.sha256
    policy = FetchPolicy(max_bytes=10_000_000, timeout=1, roots=(store.resolve(),))
    assert fetch_artifact(message, policy) == stored.read_bytes()


def test_build_message_from_onnx_file(
    tmp_path: Path, wine_xy: tuple[np.ndarray, np.ndarray], logreg: Pipeline
) -> None:
    converted = sklearn_to_onnx(logreg, wine_xy[0][:3])
    path = tmp_path / "plain.onnx"
    path.write_bytes(converted.onnx)
    message = build_message(PublishRequest(path, "plain", "1", metadata={"classes": [0, 1, 2]}))
    assert message.data is not None
    assert base64.b64decode(message.data) == converted.onnx
    assert message.metadata == {"classes": [0, 1, 2]}


def test_build_message_reads_sidecar_of_dotted_name(trained_logreg: Path, tmp_path: Path) -> None:
    # A versioned file name: the sidecar beside `wine-1.2.joblib` is `wine-1.2.meta.json`.
    model = tmp_path / "wine-1.2.joblib"
    shutil.copy(trained_logreg, model)
    shutil.copy(trained_logreg.with_name("wine-logreg.meta.json"), tmp_path / "wine-1.2.meta.json")
    with pytest.raises(ToolError, match=r"wine-logreg\.reference\.csv: no such file"):
        build_message(PublishRequest(model, "wine", "1.2"))
    reference = "wine-logreg.reference.csv"  # the training rows the sidecar names, beside it
    shutil.copy(trained_logreg.with_name(reference), tmp_path / reference)
    message = build_message(PublishRequest(model, "wine", "1.2"))
    assert message.metadata.get("feature_names") == list(load_wine().feature_names)
    assert "samples" in message.metadata
    assert message.metadata["drift_profile"]["features"]
