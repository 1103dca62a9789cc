"""Sample rows, the outputs the worker expects, and the parity check.

Every converted model is run with ONNX Runtime on sample rows and compared
with the model it came from: labels must be equal and probabilities (or
regression outputs) within :data:`PARITY_TOLERANCE`. Output names are made the
same for every family, as skl2onnx names them with ``zipmap`` off: a
classifier has ``label`` (``[N]``) and ``probabilities`` (``[N, classes]``), a
regressor ``variable``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core.convert.base import PARITY_TOLERANCE, ConversionError

__all__ = [
    "LABEL",
    "PROBABILITIES",
    "VALUE",
    "Expected",
    "canonical_outputs",
    "check_parity",
    "float32_floor",
    "plain",
    "sample_rows",
]

logger = logging.getLogger(__name__)

LABEL = "label"
PROBABILITIES = "probabilities"
VALUE = "variable"

_LABEL_TYPES = {7, 8}  # onnx.TensorProto.INT64, STRING
_FLOAT_TYPES = {1, 11}  # FLOAT, DOUBLE


@dataclass(frozen=True)
class Expected:
    """What the original model says about the sample rows."""

    labels: npt.NDArray[Any] | None = None
    probabilities: npt.NDArray[Any] | None = None
    values: npt.NDArray[Any] | None = None

    @property
    def classifier(self) -> bool:
        return self.labels is not None


def plain(values: Any) -> list[Any]:
    """Numpy scalars as plain Python values (for JSON metadata)."""
    return [v.item() if hasattr(v, "item") else v for v in values]


def float32_floor(threshold: float) -> float:
    """The largest float32 not above ``threshold``, as a float.

    A tree trained in double precision splits on ``x <= t``; ONNX tree
    ensembles hold float32 thresholds, and rounding ``t`` to the nearest
    float32 can land just above it, sending a row equal to that float32 the
    other way. For float32 inputs (all the worker scores), ``x <= t`` and
    ``x <= float32_floor(t)`` agree everywhere.
    """
    down = np.float32(threshold)
    if float(down) > threshold:
        down = np.nextafter(down, np.float32(-np.inf))
    return float(down)


def sample_rows(width: int, rows: npt.ArrayLike | None) -> npt.NDArray[np.float32]:
    """The given sample rows as float32 ``[n, width]``, or 32 seeded random rows."""
    if rows is None:
        return np.random.default_rng(0).normal(size=(32, width)).astype(np.float32)
    array = np.asarray(rows, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != width:
        raise ConversionError(f"sample rows have shape {array.shape}, the model takes {width}")
    return array


def _rename(model: Any, old: str, new: str) -> None:
    if old == new:
        return
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def canonical_outputs(model: Any, *, classifier: bool) -> bytes:
    """Name the outputs as the worker and OIP clients expect; serialize the model."""
    outputs = list(model.graph.output)
    types = [o.type.tensor_type.elem_type for o in outputs]
    if classifier:
        label = next((o for o, t in zip(outputs, types) if t in _LABEL_TYPES), None)
        proba = next((o for o, t in zip(outputs, types) if t in _FLOAT_TYPES), None)
        if len(outputs) != 2 or label is None or proba is None:
            raise ConversionError(f"classifier has outputs {[o.name for o in outputs]}")
        _rename(model, label.name, LABEL)
        _rename(model, proba.name, PROBABILITIES)
        # One label per row (onnxmltools' LightGBM converter declares shape [1]).
        shape = label.type.tensor_type.shape
        del shape.dim[:]
        shape.dim.add()
    else:
        if len(outputs) != 1 or types[0] not in _FLOAT_TYPES:
            raise ConversionError(f"regressor has outputs {[o.name for o in outputs]}")
        _rename(model, outputs[0].name, VALUE)
    data: bytes = model.SerializeToString()
    return data


def check_parity(
    onnx_bytes: bytes, rows: npt.NDArray[np.float32], expected: Expected
) -> tuple[float, list[Any] | None]:
    """Run the ONNX model on ``rows``; return (max abs diff, labels) or raise on a mismatch."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: rows})))
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise ConversionError(f"ONNX Runtime cannot run the converted model: {exc}") from exc
    n = len(rows)
    labels: list[Any] | None = None
    if expected.labels is not None:
        onnx_labels = np.asarray(got[LABEL]).reshape(-1)
        want = np.asarray(expected.labels).reshape(-1)
        if onnx_labels.shape != want.shape or not np.array_equal(onnx_labels, want):
            wrong = int(np.sum(onnx_labels != want)) if onnx_labels.shape == want.shape else n
            raise ConversionError(
                f"ONNX labels differ from the model's on {wrong} of {n} sample rows"
            )
        labels = plain(want)
        pairs = [(got[PROBABILITIES], expected.probabilities)]
    else:
        pairs = [(got[VALUE], expected.values)]
    diff = 0.0
    for onnx_out, reference in pairs:
        if reference is None:
            continue
        a = np.asarray(onnx_out, dtype=np.float64).reshape(n, -1)
        b = np.asarray(reference, dtype=np.float64).reshape(n, -1)
        if a.shape != b.shape:
            raise ConversionError(f"ONNX output has shape {a.shape}, the model's {b.shape}")
        diff = max(diff, float(np.max(np.abs(a - b))) if a.size else 0.0)
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        raise ConversionError(f"ONNX outputs differ from the model's by {diff:.2e}")
    return diff, labels
