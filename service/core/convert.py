"""scikit-learn to ONNX, on the publisher's machine, with a parity check.

The worker never unpickles anything: a pickled estimator is loaded here, by
the person who made it, converted to ONNX (classifier probabilities as a plain
``[rows, classes]`` tensor, not skl2onnx's slow list of dicts) and compared with
the original on sample rows before it is published.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ConversionError", "Converted", "load_estimator", "sklearn_to_onnx"]

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4


class ConversionError(Exception):
    """The estimator cannot be converted, or the ONNX model disagrees with it."""


@dataclass(frozen=True)
class Converted:
    onnx: bytes
    width: int
    classes: list[Any] | None
    sample_labels: list[Any] | None
    max_abs_diff: float


def load_estimator(path: Path) -> Any:
    """Load a joblib/pickle file. This runs the file's code: only for your own files."""
    import joblib

    return joblib.load(path)


def _width(estimator: Any) -> int:
    width = getattr(estimator, "n_features_in_", None)
    if not isinstance(width, int | np.integer):
        raise ConversionError("estimator has no n_features_in_; is it fitted?")
    return int(width)


def sklearn_to_onnx(estimator: Any, sample_rows: npt.ArrayLike | None = None) -> Converted:
    """Convert ``estimator`` and check the ONNX outputs against its own on sample rows."""
    import onnxruntime as ort
    from skl2onnx import to_onnx

    width = _width(estimator)
    rows = (
        np.asarray(sample_rows, dtype=np.float32)
        if sample_rows is not None
        else np.random.default_rng(0).normal(size=(32, width)).astype(np.float32)
    )
    if rows.ndim != 2 or rows.shape[1] != width:
        raise ConversionError(f"sample rows have shape {rows.shape}, estimator takes {width}")
    is_classifier = hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")
    options = {"zipmap": False} if is_classifier else None
    try:
        model = to_onnx(estimator, rows[:1], options=options, target_opset=None)
    except Exception as exc:
        raise ConversionError(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from exc
    onnx_bytes = model.SerializeToString()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: rows})
    if is_classifier:
        expected_labels = estimator.predict(rows)
        if not np.array_equal(np.asarray(outputs[0]).reshape(-1), expected_labels):
            raise ConversionError("ONNX labels differ from the estimator's on sample rows")
        diff = float(np.max(np.abs(np.asarray(outputs[1]) - estimator.predict_proba(rows))))
        classes = [c.item() if hasattr(c, "item") else c for c in estimator.classes_]
        labels = [x.item() if hasattr(x, "item") else x for x in expected_labels]
    else:
        expected = np.asarray(estimator.predict(rows), dtype=np.float64).reshape(len(rows), -1)
        diff = float(np.max(np.abs(np.asarray(outputs[0]).reshape(len(rows), -1) - expected)))
        classes, labels = None, None
    if diff > PARITY_TOLERANCE:
        raise ConversionError(f"ONNX outputs differ from the estimator's by {diff:.2e}")
    logger.info("converted %s: parity max abs diff %.2e", type(estimator).__name__, diff)
    return Converted(onnx_bytes, width, classes, labels, diff)
