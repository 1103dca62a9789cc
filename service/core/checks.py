"""The checks a built model passes before it may serve: compatible inputs, a warm-up.

Used by :meth:`service.core.registry.ModelRegistry.build` for every version,
serving or candidate, so a candidate in a rollout is held to the same bar.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from service.core import errors
from service.core.messages import ModelMessage
from service.core.outputs import render
from service.core.runtime import ModelRuntime, Signature
from service.core.runtime.base import Outputs

if TYPE_CHECKING:
    from service.core.registry import ServingModel

__all__ = ["check_compatible", "check_renders", "warm_up"]

logger = logging.getLogger(__name__)


def check_compatible(
    message: ModelMessage, new: Signature, old: Signature | None, old_version: str = "?"
) -> None:
    """A new version must accept the records the old one accepted, unless told otherwise."""
    if old is None or message.metadata.get("schema_change") is True:
        return
    if old.width != new.width:
        raise errors.IncompatibleInputs(
            f"version {message.version} takes {new.width} features but records for "
            f"{message.name!r} carry {old.width} (set metadata.schema_change=true to allow)"
        )
    if old.feature_names and new.feature_names and old.feature_names != new.feature_names:
        raise errors.IncompatibleInputs(
            f"feature names of {message.version} differ from those of {old_version}"
        )


#: The widest row a model may take, and give back (a JSON record of the default 1 MB holds
#: ~250,000 numbers like "0.5,"). Without a bound, a 73-byte model declaring 400,000 inputs
#: took a worker to 1.3 GB in its warm-up: 64 rows of zeros, their outputs rendered as JSON,
#: which costs ~200 bytes a value while it lasts.
MAX_VALUES_A_ROW = 250_000
#: The warm-up's batch holds at most this many values (fewer rows for a wide model).
WARMUP_VALUES = 500_000


def warm_up(
    message: ModelMessage, runtime: ModelRuntime, rows: int, seconds: float = 30.0
) -> Outputs:
    """Run the model on one row, then on its samples (checking expected labels) or on up to
    ``rows`` zeros, each run stopped after ``seconds``; its outputs, for the caller to check
    that they render as scored records. Fewer than two samples do not replace the zeros: an
    empty list once skipped every run, and a broken version replaced a good one."""
    samples = message.metadata.get("samples")
    width, dtype = runtime.signature.width, runtime.signature.dtype
    if width > MAX_VALUES_A_ROW:
        raise errors.IncompatibleInputs(f"takes {width} features a row; at most {MAX_VALUES_A_ROW}")
    given = np.zeros((0, width), dtype=dtype)
    try:
        if isinstance(samples, dict) and isinstance(samples.get("inputs"), list):
            given = np.asarray(samples["inputs"], dtype=dtype).reshape(-1, width)
        first = given[:1] if len(given) else np.zeros((1, width), dtype=dtype)
        one = runtime.predict_within(first, seconds)
        a_row = sum(int(out.size) for out in one.values())
        if max(width, a_row) > MAX_VALUES_A_ROW:
            raise errors.WarmupFailed(f"gives {a_row} values a row; at most {MAX_VALUES_A_ROW}")
        rows = max(2, min(rows, WARMUP_VALUES // max(width, a_row, 1)))
        given = given[:rows]  # samples too: as many rows as zeros would be
        many = given if len(given) > 1 else np.zeros((rows, width), dtype=dtype)
        outputs = runtime.predict_within(many, seconds)
        if sum(int(out.size) for out in outputs.values()) != a_row * len(many):
            raise errors.WarmupFailed(  # its rows widen with the batch: gigabytes at 2,000
                f"gives {a_row} values for one row but not {len(many)} times as many for "
                f"{len(many)} rows"
            )
    except errors.ModelRejected:
        raise
    except Exception as exc:
        raise errors.WarmupFailed(f"warm-up prediction failed: {exc}") from None
    checked = outputs if len(given) > 1 else one if len(given) == 1 else None
    _check_classes(runtime.signature, outputs)
    expected = samples.get("labels") if isinstance(samples, dict) else None
    expected = expected if isinstance(expected, list) else None
    label = runtime.signature.label_output
    if expected is not None and label is not None and checked is not None:
        got, expected = checked[label].reshape(-1).tolist(), list(expected)[: len(given)]
        if [str(x) for x in got] != [str(x) for x in expected]:
            raise errors.WarmupFailed(
                f"sample predictions {got[:5]} differ from published labels {expected[:5]}"
            )
    return outputs


def _check_classes(signature: Signature, outputs: Outputs) -> None:
    """``metadata.classes`` name each probability column once: scored records key them."""
    classes, proba = signature.classes, signature.probability_output
    if classes is None:
        return
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise errors.WarmupFailed("metadata classes must be distinct")
    if proba is not None and outputs[proba].ndim == 2 and outputs[proba].shape[1] != len(names):
        raise errors.WarmupFailed(
            f"metadata names {len(names)} classes but output {proba!r} has "
            f"{outputs[proba].shape[1]} probabilities"
        )


def check_renders(model: ServingModel, outputs: Outputs) -> None:
    """A scored record of each warm-up row, as scoring would write it, or ``warmup_failed``:
    a version whose outputs cannot be written would fail every batch it scores."""
    try:
        render(model, outputs, list(range(len(next(iter(outputs.values()), [])))))
    except Exception as exc:
        detail = f"its outputs cannot be written as scored records: {exc}"
        raise errors.WarmupFailed(detail[:500]) from None
