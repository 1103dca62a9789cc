"""XGBoost and LightGBM to ONNX with onnxmltools (extras ``hotswap[xgboost]``, ``[lightgbm]``).

Two ways in: scikit-learn API estimators (``XGBClassifier``, ``LGBMRegressor``,
... alone or at the end of a pipeline), converted by skl2onnx with
onnxmltools' converters registered for them; and native model files
(XGBoost ``.json``/``.ubj`` Booster files, LightGBM ``.txt``), converted by
onnxmltools directly and checked against the Booster's own predictions.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core.convert.base import ConversionError, Converted, Extra, require
from service.core.convert.parity import (
    Expected,
    canonical_outputs,
    check_parity,
    float32_floor,
    plain,
)
from service.core.convert.parity import sample_rows as _rows

__all__ = [
    "booster_file_to_onnx",
    "families_in",
    "lightgbm_float32_thresholds",
    "prepare_for_skl2onnx",
    "register_converters",
    "skl2onnx_opset",
]

logger = logging.getLogger(__name__)

# onnxmltools' tree converters emit ai.onnx.ml opset 3 at most; its own
# entry points (used for native Boosters) support main opsets up to 15.
ML_OPSET = 3
NATIVE_OPSET = 15
_LIGHTGBM_DEFAULT_NAME = re.compile(r"Column_\d+")


def _steps(estimator: Any) -> list[Any]:
    """The estimator, or the steps of a (nested) pipeline."""
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list):
        return [s for _, step in steps for s in _steps(step)]
    return [estimator]


def _family(obj: Any) -> Extra | None:
    top = type(obj).__module__.split(".", 1)[0]
    return top if top in ("xgboost", "lightgbm") else None  # type: ignore[return-value]


def families_in(estimator: Any) -> set[Extra]:
    """Which boosted-tree libraries the estimator (or its pipeline steps) comes from."""
    return {f for step in _steps(estimator) if (f := _family(step)) is not None}


@functools.cache
def register_converters(family: Extra) -> None:
    """Teach skl2onnx the scikit-learn API estimators of ``family`` (once per process)."""
    require(family)
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes as classifier_shapes,
    )
    from skl2onnx.common.shape_calculator import (
        calculate_linear_regressor_output_shapes as regressor_shapes,
    )

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if family == "xgboost":
        import xgboost
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

        pairs = [(xgboost.XGBClassifier, True), (xgboost.XGBRegressor, False)]
        pairs += [(xgboost.XGBRFClassifier, True), (xgboost.XGBRFRegressor, False)]
        convert = convert_xgboost
    else:
        import lightgbm
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        pairs = [(lightgbm.LGBMClassifier, True), (lightgbm.LGBMRegressor, False)]
        convert = convert_lightgbm
    for cls, is_classifier in pairs:
        update_registered_converter(
            cls,
            f"{family}{cls.__name__}",
            classifier_shapes if is_classifier else regressor_shapes,
            convert,
            options=options if is_classifier else None,
        )


def skl2onnx_opset() -> dict[str, int]:
    from skl2onnx import get_latest_tested_opset_version

    return {"": int(get_latest_tested_opset_version()), "ai.onnx.ml": ML_OPSET}


def lightgbm_float32_thresholds(booster: Any) -> Any:
    """A copy of a LightGBM Booster whose numeric thresholds are float32 values.

    LightGBM compares in double precision; an ONNX tree ensemble in float32.
    Each ``x <= t`` becomes ``x <= float32_floor(t)``, which decides every
    float32 input the same way, so the float32 ONNX model agrees exactly.
    """
    import lightgbm

    # ``tree_sizes`` gives each tree's length in bytes, which the new thresholds
    # change; without it LightGBM reads the trees one after another.
    text = booster.model_to_string().split("\n")
    lines = [line for line in text if not line.startswith("tree_sizes=")]
    for i, line in enumerate(lines):
        if not line.startswith("threshold="):
            continue
        kinds = next((x for x in lines[i + 1 :] if x.startswith(("decision_type=", "Tree="))), "")
        if not kinds.startswith("decision_type="):
            raise ConversionError("LightGBM model text has thresholds without decision types")
        flags = [int(k) for k in kinds.split("=", 1)[1].split()]
        values = line.split("=", 1)[1].split()
        # Bit 0 of a decision type marks a categorical split: its threshold is an index.
        lines[i] = "threshold=" + " ".join(
            v if flag & 1 else repr(float32_floor(float(v))) for v, flag in zip(values, flags)
        )
    return lightgbm.Booster(model_str="\n".join(lines))


def prepare_for_skl2onnx(estimator: Any, families: set[Extra]) -> Any:
    """Register converters; return a copy of the estimator ready for onnxmltools.

    onnxmltools reads XGBoost trees from the booster's dump, where a split names
    its feature; it only understands ``f<index>``, so names are dropped from the
    copy's boosters. LightGBM boosters get float32 thresholds (see
    :func:`lightgbm_float32_thresholds`). The original is untouched, and the
    parity check compares with the original.
    """
    for family in sorted(families):
        register_converters(family)
    clone = copy.deepcopy(estimator)
    for step in _steps(clone):
        if _family(step) == "xgboost":
            step.get_booster().feature_names = None
        elif _family(step) == "lightgbm":
            step._Booster = lightgbm_float32_thresholds(step.booster_)
    return clone


# --- native files ---------------------------------------------------------------


def _xgboost_booster(path: Path) -> tuple[Any, bool, int, list[str] | None, str]:
    (xgboost, _) = require("xgboost")
    try:
        booster = xgboost.Booster(model_file=str(path))
    except Exception as exc:  # xgboost.core.XGBoostError and friends
        raise ConversionError(f"XGBoost cannot load {path.name}: {exc}") from exc
    learner = json.loads(booster.save_config())["learner"]
    objective = str(learner["objective"]["name"])
    num_class = int(learner["learner_model_param"].get("num_class", 0) or 0)
    is_classifier = objective.startswith(("binary:logistic", "multi:"))
    n_classes = max(num_class, 2) if is_classifier else 0
    names = list(booster.feature_names) if booster.feature_names else None
    return booster, is_classifier, n_classes, names, objective


def _xgboost_expected(
    booster: Any, rows: npt.NDArray[np.float32], objective: str, n_classes: int
) -> Expected:
    import xgboost

    data = xgboost.DMatrix(rows, feature_names=booster.feature_names)
    if objective.startswith("binary:logistic"):
        p = booster.predict(data).reshape(-1)
        return Expected(labels=(p > 0.5).astype(np.int64), probabilities=np.c_[1 - p, p])
    if objective == "multi:softmax":  # predict() gives labels; probabilities from margins
        margin = booster.predict(data, output_margin=True).reshape(len(rows), n_classes)
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        labels = booster.predict(data).reshape(-1).astype(np.int64)
        return Expected(labels=labels, probabilities=e / e.sum(axis=1, keepdims=True))
    if objective.startswith("multi:"):
        p = booster.predict(data).reshape(len(rows), n_classes)
        return Expected(labels=p.argmax(axis=1), probabilities=p)
    return Expected(values=np.asarray(booster.predict(data), dtype=np.float64))


def _lightgbm_booster(path: Path) -> tuple[Any, bool, int, list[str] | None, str]:
    (lightgbm, _) = require("lightgbm")
    try:
        booster = lightgbm.Booster(model_file=str(path))
        dump = booster.dump_model(num_iteration=1)
    except Exception as exc:  # lightgbm.basic.LightGBMError and friends
        raise ConversionError(f"LightGBM cannot load {path.name}: {exc}") from exc
    objective = str(dump.get("objective", "")).split(" ", 1)[0]
    is_classifier = objective.startswith(("binary", "multiclass"))
    n_classes = max(int(dump.get("num_class", 1)), 2) if is_classifier else 0
    names = [str(n) for n in booster.feature_name()]
    if all(_LIGHTGBM_DEFAULT_NAME.fullmatch(n) for n in names):
        names = []  # LightGBM's own placeholders: the model was trained without names
    return booster, is_classifier, n_classes, names or None, objective


def _lightgbm_expected(
    booster: Any, rows: npt.NDArray[np.float32], objective: str, n_classes: int
) -> Expected:
    p = np.asarray(booster.predict(rows), dtype=np.float64)
    if objective.startswith("binary"):
        p = p.reshape(-1)
        return Expected(labels=(p > 0.5).astype(np.int64), probabilities=np.c_[1 - p, p])
    if objective.startswith("multiclass"):
        p = p.reshape(len(rows), n_classes)
        return Expected(labels=p.argmax(axis=1), probabilities=p)
    return Expected(values=p)


def booster_file_to_onnx(
    path: Path,
    sample_rows: npt.ArrayLike | None = None,
    *,
    feature_names: list[str] | None = None,
) -> Converted:
    """Convert a native XGBoost (``.json``/``.ubj``) or LightGBM (``.txt``) model file."""
    family: Extra = "lightgbm" if path.suffix == ".txt" else "xgboost"
    load = _lightgbm_booster if family == "lightgbm" else _xgboost_booster
    booster, is_classifier, n_classes, names, objective = load(path)  # checks the extra
    from onnxmltools.convert.common.data_types import FloatTensorType

    width = int(booster.num_feature() if family == "lightgbm" else booster.num_features())
    notes: list[str] = []
    if names is None:
        if feature_names is not None:
            names = list(feature_names)
            notes.append("the model file names no features; using feature_names from metadata")
        else:
            names = [f"f{i}" for i in range(width)]
            notes.append(
                f"the model file names no features; generated f0..f{width - 1} "
                "(pass --metadata '{\"feature_names\": [...]}' to name them)"
            )
    if len(names) != width:
        raise ConversionError(f"{len(names)} feature names for a model of {width} features")
    rows = _rows(width, sample_rows)
    initial_types = [("X", FloatTensorType([None, width]))]
    try:
        if family == "xgboost":
            from onnxmltools import convert_xgboost

            unnamed = booster.copy()
            unnamed.feature_names = None  # onnxmltools only understands f<index> in the dump
            model = convert_xgboost(unnamed, initial_types=initial_types, target_opset=NATIVE_OPSET)
        else:
            from onnxmltools import convert_lightgbm

            model = convert_lightgbm(
                lightgbm_float32_thresholds(booster),
                initial_types=initial_types,
                target_opset=NATIVE_OPSET,
                zipmap=False,
            )
    except Exception as exc:
        raise ConversionError(
            f"onnxmltools cannot convert {family} model ({objective}): {exc}"
        ) from exc
    onnx_bytes = canonical_outputs(model, classifier=is_classifier)
    expect = _lightgbm_expected if family == "lightgbm" else _xgboost_expected
    diff, labels = check_parity(onnx_bytes, rows, expect(booster, rows, objective, n_classes))
    source = f"{family} Booster ({objective})"
    logger.info("converted %s: parity max abs diff %.2e", source, diff)
    return Converted(
        onnx_bytes,
        width,
        plain(range(n_classes)) if is_classifier else None,
        labels,
        diff,
        feature_names=names,
        source=source,
        notes=tuple(notes),
    )
