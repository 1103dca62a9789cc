"""XGBoost and LightGBM to ONNX: scikit-learn API estimators, pipelines and native files.

Every model is trained here (tmp_path), converted, and then run again with the
worker's own ONNX runtime, whose outputs are compared with the original
model's here, independently of the converter's built-in parity check.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.core.convert import (
    PARITY_TOLERANCE,
    ConversionError,
    MissingExtra,
    convert_file,
    sklearn_to_onnx,
)
from service.core.convert.parity import Expected, check_parity
from service.core.messages import encode_model_message, parse_model_message
from service.core.registry import ModelRegistry
from service.core.runtime import OnnxModel
from service.tools.publish import PublishRequest, build_message

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

Data = tuple[np.ndarray, np.ndarray, np.ndarray]
NAMES = [n.replace("/", "_") for n in load_wine().feature_names]


@pytest.fixture(scope="module")
def wine() -> Data:
    """Training rows, their labels, and held-out rows to check on (all float32)."""
    data = load_wine()
    x_train, x_test, y_train, _ = train_test_split(
        data.data.astype(np.float32), data.target, test_size=0.3, random_state=0
    )
    return x_train, y_train, x_test


def _dump(model: Any, tmp_path: Path, name: str = "model.joblib") -> Path:
    path = tmp_path / name
    joblib.dump(model, path)
    return path


def _assert_classifier(onnx: bytes, model: Any, rows: np.ndarray) -> None:
    runtime = OnnxModel(onnx)
    sig = runtime.signature
    assert [o.name for o in sig.outputs] == ["label", "probabilities"]
    assert (sig.label_output, sig.probability_output) == ("label", "probabilities")
    assert sig.outputs[0].shape == (None,)
    out = runtime.predict(rows)
    assert out["label"].tolist() == np.asarray(model.predict(rows)).tolist()
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(rows), atol=1e-4)


def _assert_regressor(onnx: bytes, expected: np.ndarray, rows: np.ndarray) -> None:
    runtime = OnnxModel(onnx)
    assert [o.name for o in runtime.signature.outputs] == ["variable"]
    assert runtime.signature.label_output is None
    [out] = runtime.predict(rows).values()
    np.testing.assert_allclose(out.reshape(-1), expected, atol=1e-4)


# --- scikit-learn API estimators saved with joblib --------------------------------

CLASSIFIERS = {
    "xgb": lambda: xgb.XGBClassifier(n_estimators=30, max_depth=3, random_state=0),
    "lgbm": lambda: lgb.LGBMClassifier(n_estimators=30, random_state=0, verbose=-1),
}
REGRESSORS = {
    "xgb": lambda: xgb.XGBRegressor(n_estimators=30, max_depth=3, random_state=0),
    "lgbm": lambda: lgb.LGBMRegressor(n_estimators=30, random_state=0, verbose=-1),
}


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_multiclass_classifier(kind: str, wine: Data, tmp_path: Path) -> None:
    x, y, rows = wine
    model = CLASSIFIERS[kind]().fit(x, y)
    converted = convert_file(_dump(model, tmp_path), rows)
    assert converted.classes == [0, 1, 2]
    assert converted.width == 13
    assert converted.sample_labels is not None
    assert converted.sample_labels == model.predict(rows).tolist()
    assert set(converted.sample_labels) == {0, 1, 2}
    assert converted.max_abs_diff <= PARITY_TOLERANCE
    assert converted.source == type(model).__name__
    _assert_classifier(converted.onnx, model, rows)


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_binary_classifier(kind: str, wine: Data, tmp_path: Path) -> None:
    x, y, rows = wine
    model = CLASSIFIERS[kind]().fit(x, (y == 1).astype(int))
    converted = convert_file(_dump(model, tmp_path), rows)
    assert converted.classes == [0, 1]
    _assert_classifier(converted.onnx, model, rows)


@pytest.mark.parametrize("kind", sorted(REGRESSORS))
def test_regressor(kind: str, wine: Data, tmp_path: Path) -> None:
    x, _, rows = wine
    target = x[:, 0] * 2.0 - x[:, 9]  # alcohol and colour intensity
    model = REGRESSORS[kind]().fit(x, target)
    converted = convert_file(_dump(model, tmp_path), rows)
    assert (converted.classes, converted.sample_labels) == (None, None)
    assert converted.max_abs_diff <= PARITY_TOLERANCE
    _assert_regressor(converted.onnx, model.predict(rows), rows)


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_pipeline_ending_in_boosted_classifier(kind: str, wine: Data, tmp_path: Path) -> None:
    x, y, _ = wine
    model = make_pipeline(StandardScaler(), CLASSIFIERS[kind]()).fit(x, y)
    # Rows off the training grid: a row exactly on a split threshold may go either
    # way after float32 scaling, and the parity check would (rightly) refuse it.
    rows = np.random.default_rng(1).normal(x.mean(0), x.std(0), size=(40, 13)).astype(np.float32)
    converted = convert_file(_dump(model, tmp_path), rows)
    assert converted.source == "Pipeline"
    assert converted.classes == [0, 1, 2]
    _assert_classifier(converted.onnx, model, rows)


def test_pipeline_ending_in_boosted_regressor(wine: Data, tmp_path: Path) -> None:
    x, _, _ = wine
    model = make_pipeline(StandardScaler(), REGRESSORS["lgbm"]()).fit(x, x[:, 0])
    rows = np.random.default_rng(2).normal(x.mean(0), x.std(0), size=(40, 13)).astype(np.float32)
    converted = convert_file(_dump(model, tmp_path), rows)
    _assert_regressor(converted.onnx, model.predict(rows), rows)


def test_estimator_fitted_on_a_dataframe_keeps_its_feature_names(
    wine: Data, tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")
    x, y, rows = wine
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(pd.DataFrame(x, columns=NAMES), y)
    message = build_message(PublishRequest(_dump(model, tmp_path), "wine", "1"))
    assert message.metadata["feature_names"] == NAMES
    assert message.metadata["converted_from"] == "XGBClassifier"
    assert message.metadata["classes"] == [0, 1, 2]
    # The original keeps its names (only a copy was stripped for onnxmltools).
    assert model.get_booster().feature_names == NAMES
    served = ModelRegistry().build(parse_model_message(b"wine", encode_model_message(message)))
    assert served.runtime.signature.feature_names == tuple(NAMES)
    out = served.runtime.predict(rows)
    frame = pd.DataFrame(rows, columns=NAMES)
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(frame), atol=1e-4)


# --- native model files -----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_native_xgboost_booster_with_names(suffix: str, wine: Data, tmp_path: Path) -> None:
    x, y, rows = wine
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
        xgb.DMatrix(x, label=y, feature_names=NAMES),
        num_boost_round=20,
    )
    path = tmp_path / f"booster{suffix}"
    booster.save_model(str(path))
    converted = convert_file(path, rows)
    assert converted.feature_names == NAMES
    assert converted.notes == ()
    assert converted.classes == [0, 1, 2]
    assert converted.source == "xgboost Booster (multi:softprob)"
    expected = booster.predict(xgb.DMatrix(rows, feature_names=NAMES))
    out = OnnxModel(converted.onnx).predict(rows)
    assert out["label"].tolist() == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-4)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_native_xgboost_binary_without_names(
    suffix: str, wine: Data, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x, y, rows = wine
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, label=y == 0), 15
    )
    path = tmp_path / f"binary{suffix}"
    booster.save_model(str(path))
    with caplog.at_level(logging.WARNING):
        message = build_message(PublishRequest(path, "binary", "1"))
    generated = [f"f{i}" for i in range(13)]
    assert message.metadata["feature_names"] == generated
    assert message.metadata["classes"] == [0, 1]
    assert "generated f0..f12" in caplog.text
    served = ModelRegistry().build(parse_model_message(b"binary", encode_model_message(message)))
    p = booster.predict(xgb.DMatrix(rows))
    out = served.runtime.predict(rows)
    assert out["label"].tolist() == (p > 0.5).astype(int).tolist()
    np.testing.assert_allclose(out["probabilities"][:, 1], p, atol=1e-4)


def test_native_xgboost_names_from_metadata(wine: Data, tmp_path: Path) -> None:
    x, _, rows = wine
    booster = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(x, label=x[:, 0]), 10)
    path = tmp_path / "reg.json"
    booster.save_model(str(path))
    message = build_message(PublishRequest(path, "r", "1", metadata={"feature_names": NAMES}))
    assert message.metadata["feature_names"] == NAMES
    served = ModelRegistry().build(parse_model_message(b"r", encode_model_message(message)))
    [out] = served.runtime.predict(rows).values()
    np.testing.assert_allclose(out.reshape(-1), booster.predict(xgb.DMatrix(rows)), atol=1e-4)
    with pytest.raises(ConversionError, match="3 feature names for a model of 13"):
        convert_file(path, rows, feature_names=["a", "b", "c"])


def test_native_lightgbm_multiclass_with_names(wine: Data, tmp_path: Path) -> None:
    x, y, rows = wine
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(x, label=y, feature_name=NAMES), 20)
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    converted = convert_file(path, rows)
    assert converted.feature_names == NAMES
    assert converted.classes == [0, 1, 2]
    expected = lgb.Booster(model_file=str(path)).predict(rows)
    runtime = OnnxModel(converted.onnx)
    assert runtime.signature.outputs[0].shape == (None,)  # onnxmltools declares [1]
    out = runtime.predict(rows)
    assert out["label"].tolist() == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-4)


def test_native_lightgbm_regression_without_names(wine: Data, tmp_path: Path) -> None:
    x, _, rows = wine
    booster = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(x, x[:, 0].copy()), 20
    )
    path = tmp_path / "reg.txt"
    booster.save_model(str(path))
    converted = convert_file(path, rows)
    # LightGBM calls unnamed columns Column_0..; those are not names.
    assert converted.feature_names == [f"f{i}" for i in range(13)]
    assert any("generated" in note for note in converted.notes)
    _assert_regressor(converted.onnx, booster.predict(rows), rows)


def test_lightgbm_threshold_just_below_a_float32_value(tmp_path: Path) -> None:
    """LightGBM splits in double; a row equal to the float32 nearest the threshold must
    go the way LightGBM sends it, not the way a rounded float32 threshold would."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1))
    params = {"objective": "regression", "num_leaves": 2, "min_data_in_leaf": 1, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(x, (x[:, 0] > 0.3).astype(float)), 1)
    v = np.float32(0.3)
    t = float(v) - float(np.spacing(v)) / 4  # below v, but float32(t) == v
    assert np.float32(t) == v
    lines = [line for line in booster.model_to_string().split("\n") if "tree_sizes=" not in line]
    [at] = [i for i, line in enumerate(lines) if line.startswith("threshold=")]
    lines[at] = f"threshold={t!r}"
    path = tmp_path / "stump.txt"
    path.write_text("\n".join(lines))
    rows = np.array([[np.nextafter(v, -1)], [v], [np.nextafter(v, 1)]], dtype=np.float32)
    expected = lgb.Booster(model_file=str(path)).predict(rows)
    assert expected[0] != expected[1] == expected[2]  # v itself goes right in LightGBM
    converted = convert_file(path, rows)
    [out] = OnnxModel(converted.onnx).predict(rows).values()
    np.testing.assert_allclose(out.reshape(-1), expected, atol=1e-6)


def test_unreadable_native_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"not": "a booster"}')
    with pytest.raises(ConversionError, match=r"XGBoost cannot load broken\.json"):
        convert_file(path)


# --- the parity check -------------------------------------------------------------


def test_parity_failure_against_another_model_is_refused(wine: Data) -> None:
    x, y, rows = wine
    model = xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(x, y)
    other = xgb.XGBClassifier(n_estimators=3, max_depth=1).fit(x, y)
    with pytest.raises(ConversionError, match="differ"):
        sklearn_to_onnx(model, rows, reference=other)


def test_parity_check_thresholds(wine: Data) -> None:
    x, y, rows = wine
    model = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(x, y)
    onnx = sklearn_to_onnx(model, rows).onnx
    labels, proba = model.predict(rows), model.predict_proba(rows)
    diff, got = check_parity(onnx, rows, Expected(labels, proba + 5e-5))
    assert 4e-5 < diff <= PARITY_TOLERANCE
    assert got == labels.tolist()
    with pytest.raises(ConversionError, match=r"outputs differ from the model's by 1\.00e-03"):
        check_parity(onnx, rows, Expected(labels, proba + 1e-3))
    with pytest.raises(ConversionError, match="labels differ from the model's on 1 of"):
        check_parity(onnx, rows, Expected(np.r_[(labels[0] + 1) % 3, labels[1:]], proba))


# --- missing extras ---------------------------------------------------------------


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``package`` (and its submodules) unimportable, as if it were not installed."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def test_missing_xgboost_extra_for_a_pickled_estimator(
    wine: Data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    x, y, _ = wine
    path = _dump(xgb.XGBClassifier(n_estimators=2).fit(x, y), tmp_path)
    _hide(monkeypatch, "xgboost")
    with pytest.raises(MissingExtra) as raised:
        convert_file(path)
    assert str(raised.value) == "install hotswap[xgboost] to publish XGBoost models"
    # Through the CLI: one line saying what to do, and nothing is published.
    assert main(["publish", str(path), "--name", "m", "--version", "1"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ")
    assert line.endswith("install hotswap[xgboost] to publish XGBoost models")


@pytest.mark.parametrize(
    ("package", "suffix", "extra"),
    [
        ("xgboost", ".ubj", "xgboost"),
        ("lightgbm", ".txt", "lightgbm"),
        ("onnxmltools", ".txt", "lightgbm"),
    ],
)
def test_missing_extra_for_a_native_file(
    package: str, suffix: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"never read")
    _hide(monkeypatch, package)
    with pytest.raises(MissingExtra, match=rf"^install hotswap\[{extra}\] to publish"):
        convert_file(path)
