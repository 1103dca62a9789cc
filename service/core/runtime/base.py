"""The interface every model runtime implements.

The registry and scorer only ever talk to this, so adding a format means
adding one module, not touching scoring or swapping.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ModelRuntime", "Outputs", "Signature", "TensorSpec"]

Outputs = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, element type and shape (``None`` for a free dimension) of a tensor."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class Signature:
    """What a model takes and returns; checked before a swap, shown over HTTP."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    width: int
    feature_names: tuple[str, ...] | None = None
    label_output: str | None = None
    probability_output: str | None = None
    classes: tuple[Any, ...] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dtype(self) -> np.dtype[np.floating[Any]]:
        """What rows are built in: a double input gets float64, so its features keep their
        precision (and values beyond float32's range) on the way to the model."""
        if self.inputs and self.inputs[0].dtype == "tensor(double)":
            return np.dtype(np.float64)
        return np.dtype(np.float32)


class ModelRuntime(abc.ABC):
    """A loaded model: predict a batch, describe itself, release its resources."""

    signature: Signature

    @abc.abstractmethod
    def predict(self, batch: npt.NDArray[np.floating[Any]]) -> Outputs:
        """Score a ``(rows, width)`` batch (of ``signature.dtype``) in one call; outputs
        have ``rows`` rows."""

    def predict_within(self, batch: npt.NDArray[np.floating[Any]], seconds: float) -> Outputs:
        """:meth:`predict`, stopped with an error after ``seconds`` where the runtime can
        stop a run (the warm-up of a version nobody has seen run yet); here: unbounded."""
        return self.predict(batch)

    @abc.abstractmethod
    def close(self) -> None:
        """Release the session; called once the model no longer serves."""
