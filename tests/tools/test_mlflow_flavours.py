"""Each MLflow flavour `publish models:/` converts, saved by MLflow itself (no server needed).

``_model_file`` turns a downloaded version into a file ``publish`` accepts;
the message built from it must carry the signature's feature names and
predict what the original model predicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from service.tools.mlflow_source import _model_file
from service.tools.publish import PublishRequest, build_message


def _wine() -> tuple[Any, Any]:
    from sklearn.datasets import load_wine

    frame, target = load_wine(return_X_y=True, as_frame=True)
    return frame, target


def _onnx_labels(message: Any, rows: Any) -> list[int]:
    import base64

    session = ort.InferenceSession(base64.b64decode(message.data))
    feed = {session.get_inputs()[0].name: np.asarray(rows, dtype=np.float32)}
    return [int(v) for v in session.run(["label"], feed)[0]]


def _saved(flavour: str, model: Any, frame: Any, target: Any, where: Path) -> Path:
    import importlib

    import mlflow

    signature = mlflow.models.infer_signature(frame, target)
    module = importlib.import_module(f"mlflow.{flavour}")
    extra = {"skops_trusted_types": ["sklearn.tree._tree.Tree"]} if flavour == "sklearn" else {}
    module.save_model(
        model,
        str(where),
        signature=signature,
        input_example=None if flavour == "onnx" else frame.iloc[:4],  # onnx: slow to check
        pip_requirements=[],  # no inference: it loads the model again in a subprocess
        **extra,
    )
    return where


@pytest.mark.parametrize("flavour", ["sklearn", "xgboost", "lightgbm", "onnx"])
def test_a_flavour_converts_with_the_signatures_names(flavour: str, tmp_path: Path) -> None:
    frame, target = _wine()
    if flavour == "sklearn":
        from sklearn.ensemble import RandomForestClassifier

        model: Any = RandomForestClassifier(n_estimators=5, random_state=0).fit(frame, target)
    elif flavour == "xgboost":
        from xgboost import XGBClassifier

        model = XGBClassifier(n_estimators=5, max_depth=2).fit(frame, target)
    elif flavour == "lightgbm":
        from lightgbm import LGBMClassifier

        model = LGBMClassifier(n_estimators=5, verbose=-1).fit(frame, target)
    else:
        import onnx
        from sklearn.tree import DecisionTreeClassifier

        from service.core.convert import sklearn_to_onnx

        fitted = DecisionTreeClassifier(max_depth=3).fit(frame.to_numpy(), target)

        model = onnx.load_from_string(sklearn_to_onnx(fitted, None).onnx)
        expected = [int(v) for v in fitted.predict(frame.to_numpy())]
    local = _saved(flavour, model, frame, target, tmp_path / "model")
    path, found, meta = _model_file(local, tmp_path)
    assert found == flavour
    assert meta["feature_names"] == list(frame.columns)
    assert len(meta.get("sample_rows", [0] * 4)) == 4
    message = build_message(PublishRequest(path, "wine", "1", metadata=meta))
    if flavour != "onnx":
        expected = [int(v) for v in model.predict(frame)]
        assert message.metadata["parity_max_abs_diff"] <= 1e-4
    assert _onnx_labels(message, frame.to_numpy()) == expected
