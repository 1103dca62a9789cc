"""What every conversion returns, its errors, and the optional libraries it may need.

The converters for boosted trees and PMML live behind optional extras
(``hotswap[xgboost]``, ``[lightgbm]``, ``[pmml]``) so the worker's image never
carries them: the worker only loads ONNX.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

__all__ = [
    "EXTRAS",
    "PARITY_TOLERANCE",
    "ConversionError",
    "Converted",
    "Extra",
    "MissingExtra",
    "extra_for_module",
    "require",
]

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4

Extra = Literal["xgboost", "lightgbm", "pmml"]

# The modules each extra installs, and what the extra is for (for the error message).
EXTRAS: dict[Extra, tuple[tuple[str, ...], str]] = {
    "xgboost": (("xgboost", "onnxmltools"), "XGBoost models"),
    "lightgbm": (("lightgbm", "onnxmltools"), "LightGBM models"),
    "pmml": (("sklearn_pmml_model",), "PMML models"),
}


class ConversionError(Exception):
    """The model cannot be converted, or the ONNX model disagrees with it."""


class MissingExtra(ConversionError):
    """An optional dependency needed for this model family is not installed."""

    def __init__(self, extra: Extra, missing: str | None = None) -> None:
        self.extra = extra
        self.missing = missing
        what = EXTRAS[extra][1]
        super().__init__(f"install hotswap[{extra}] to publish {what}")


@dataclass(frozen=True)
class Converted:
    """An ONNX model checked against the model it came from."""

    onnx: bytes
    width: int
    classes: list[Any] | None
    sample_labels: list[Any] | None
    max_abs_diff: float
    feature_names: list[str] | None = None
    source: str = ""  # what was converted, e.g. "XGBClassifier" or "xgboost Booster"
    notes: tuple[str, ...] = field(default=())  # things the publisher should be told


def require(extra: Extra) -> list[ModuleType]:
    """Import the modules of ``extra``, or raise :class:`MissingExtra` saying what to install."""
    modules: list[ModuleType] = []
    for name in EXTRAS[extra][0]:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise MissingExtra(extra, name) from exc
    return modules


def extra_for_module(module: str | None) -> Extra | None:
    """The extra that provides top-level module ``module`` (from a failed unpickle)."""
    top = (module or "").split(".", 1)[0]
    for extra, (modules, _) in EXTRAS.items():
        if top == modules[0]:
            return extra
    return None
