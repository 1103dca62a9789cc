"""Models to ONNX on the publisher's machine, each checked for parity before it is published.

The worker only ever loads ONNX. What ``hotswap publish FILE`` accepts, by
file name:

=========================  ==========================================  ==========
File                       Model                                       Extra
=========================  ==========================================  ==========
``.onnx``                  ONNX, published as is (not through here)    --
``.json`` / ``.ubj``       XGBoost Booster (``Booster.save_model``)    xgboost
``.txt``                   LightGBM Booster (``Booster.save_model``)   lightgbm
``.pmml`` / ``.xml``       PMML (tree, linear or logistic regression)  pmml
anything else              joblib/pickle of a scikit-learn API model,  xgboost /
                           XGBoost/LightGBM estimators and pipelines   lightgbm
                           ending in one included                      if used
=========================  ==========================================  ==========
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy.typing as npt

from service.core.convert.base import (
    PARITY_TOLERANCE,
    ConversionError,
    Converted,
    MissingExtra,
)
from service.core.convert.sklearn import load_estimator, sklearn_to_onnx

__all__ = [
    "PARITY_TOLERANCE",
    "ConversionError",
    "Converted",
    "MissingExtra",
    "convert_file",
    "load_estimator",
    "sklearn_to_onnx",
]

logger = logging.getLogger(__name__)

XGBOOST_SUFFIXES = (".json", ".ubj")
LIGHTGBM_SUFFIXES = (".txt",)
PMML_SUFFIXES = (".pmml", ".xml")


def convert_file(
    path: Path,
    sample_rows: npt.ArrayLike | None = None,
    *,
    feature_names: list[str] | None = None,
) -> Converted:
    """Convert the model in ``path`` (any accepted format but ONNX) and check its parity.

    ``feature_names`` (from the publisher's metadata) name the inputs of a
    model file that carries no names; when the file names them, its names win.
    """
    suffix = path.suffix.lower()
    converted: Converted
    if suffix in XGBOOST_SUFFIXES + LIGHTGBM_SUFFIXES:
        from service.core.convert.boosted import booster_file_to_onnx

        converted = booster_file_to_onnx(path, sample_rows, feature_names=feature_names)
    elif suffix in PMML_SUFFIXES:
        from service.core.convert.pmml import pmml_to_onnx

        converted = pmml_to_onnx(path, sample_rows)
    else:
        estimator: Any = load_estimator(path)
        converted = sklearn_to_onnx(estimator, sample_rows)
    names = converted.feature_names or feature_names
    if names is not None and len(names) != converted.width:
        raise ConversionError(f"{len(names)} feature names for a model of {converted.width}")
    if converted.feature_names is None and feature_names is not None:
        return replace(converted, feature_names=list(feature_names))
    if feature_names is not None and list(feature_names) != converted.feature_names:
        note = "the model names its features; feature_names from metadata are ignored"
        return replace(converted, notes=(*converted.notes, note))
    return converted
