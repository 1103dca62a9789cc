"""scikit-learn API estimators to ONNX, on the publisher's machine, with a parity check.

The worker never unpickles anything: a pickled estimator is loaded here, by
the person who made it, converted to ONNX (classifier probabilities as a plain
``[rows, classes]`` tensor, not skl2onnx's slow list of dicts) and compared with
the original on sample rows before it is published. XGBoost and LightGBM
estimators (alone or at the end of a pipeline) go the same way, with
onnxmltools' converters registered in skl2onnx (see :mod:`.boosted`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core.convert import boosted
from service.core.convert.base import ConversionError, Converted, MissingExtra, extra_for_module
from service.core.convert.parity import (
    Expected,
    canonical_outputs,
    check_parity,
    plain,
)
from service.core.convert.parity import sample_rows as _rows

__all__ = ["load_estimator", "predictions", "sklearn_to_onnx"]

logger = logging.getLogger(__name__)


def load_estimator(path: Path) -> Any:
    """Load a joblib/pickle file. This runs the file's code: only for your own files."""
    import joblib

    try:
        return joblib.load(path)
    except ModuleNotFoundError as exc:
        extra = extra_for_module(exc.name)
        if extra is not None:
            raise MissingExtra(extra, exc.name) from exc
        raise ConversionError(f"{path.name} needs module {exc.name!r}, not installed") from exc


def _width(estimator: Any) -> int:
    width = getattr(estimator, "n_features_in_", None)
    if not isinstance(width, int | np.integer):
        raise ConversionError("estimator has no n_features_in_; is it fitted?")
    return int(width)


def _feature_names(estimator: Any) -> list[str] | None:
    names = getattr(estimator, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else None


def _is_classifier(estimator: Any) -> bool:
    return hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")


def predictions(reference: Any, rows: npt.NDArray[np.float32], *, classifier: bool) -> Expected:
    """What ``reference`` (a fitted scikit-learn API model) predicts for ``rows``."""
    data: Any = rows
    names = _feature_names(reference)
    if names is not None:
        try:  # fitted on a DataFrame: predict on one, as its owner would
            import pandas as pd

            data = pd.DataFrame(rows, columns=names)
        except ImportError:
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if classifier:
            return Expected(
                labels=np.asarray(reference.predict(data)),
                probabilities=np.asarray(reference.predict_proba(data)),
            )
        return Expected(values=np.asarray(reference.predict(data), dtype=np.float64))


def sklearn_to_onnx(
    estimator: Any,
    sample_rows: npt.ArrayLike | None = None,
    *,
    reference: Any = None,
    source: str | None = None,
) -> Converted:
    """Convert ``estimator`` and check the ONNX outputs against ``reference``'s on sample rows.

    ``reference`` is the model whose predictions are the truth (the estimator
    itself unless told otherwise, e.g. the PMML model an estimator was rebuilt from).
    """
    from skl2onnx import to_onnx

    reference = estimator if reference is None else reference
    width = _width(estimator)
    rows = _rows(width, sample_rows)
    is_classifier = _is_classifier(estimator)
    families = boosted.families_in(estimator)
    target_opset: Any = None
    convertible = estimator
    if families:
        convertible = boosted.prepare_for_skl2onnx(estimator, families)
        target_opset = boosted.skl2onnx_opset()
    options = {"zipmap": False} if is_classifier else None
    try:
        model = to_onnx(convertible, rows[:1], options=options, target_opset=target_opset)
    except Exception as exc:
        raise ConversionError(f"skl2onnx cannot convert {type(estimator).__name__}: {exc}") from exc
    onnx_bytes = canonical_outputs(model, classifier=is_classifier)
    expected = predictions(reference, rows, classifier=is_classifier)
    diff, labels = check_parity(onnx_bytes, rows, expected)
    name = source or type(estimator).__name__
    logger.info("converted %s: parity max abs diff %.2e", name, diff)
    classes = plain(estimator.classes_) if is_classifier else None
    return Converted(
        onnx_bytes,
        width,
        classes,
        labels,
        diff,
        feature_names=_feature_names(estimator),
        source=name,
    )
