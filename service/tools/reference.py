"""``publish --reference FILE``: the drift profile of the training data, for the model message.

The reference rows are read here, on the publisher's machine (a CSV whose
header names the features, or a ``.npy`` array of rows), scored with the very
ONNX model being published, and summarised by
:func:`service.core.drift.build_profile` into ``metadata.drift_profile``: a
few kilobytes whatever the number of rows.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from service.core.drift import build_profile
from service.core.runtime import load_runtime

__all__ = ["read_reference", "reference_profile"]

logger = logging.getLogger(__name__)

MAX_ROWS = 200_000  # a sample of this many rows is plenty for 10 quantile bins


def read_reference(path: Path, names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Rows in the model's feature order, and the feature names.

    A CSV's header must name every feature of the model (in any order; extra
    columns such as the target are ignored); a ``.npy`` file is taken in the
    model's order as it is.
    """
    if path.suffix == ".npy":
        rows = np.load(path, allow_pickle=False)
        if rows.ndim != 2:
            raise ValueError(f"{path.name}: a .npy reference must be 2-D (rows, features)")
        width = rows.shape[1]
        return rows[:MAX_ROWS].astype(np.float64), names or [f"f{i}" for i in range(width)]
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        data = [row for _, row in zip(range(MAX_ROWS), reader) if row]
    wanted = names or header
    missing = [n for n in wanted if n not in header]
    if missing:
        raise ValueError(f"{path.name}: its header lacks the model's features {missing[:5]}")
    columns = [header.index(n) for n in wanted]
    rows = np.asarray([[float(row[c]) for c in columns] for row in data], dtype=np.float64)
    return rows, list(wanted)


def reference_profile(path: Path, artifact: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    """Read ``path``, score it with ``artifact`` and summarise both."""
    names = metadata.get("feature_names")
    rows, features = read_reference(path, list(names) if isinstance(names, list) else None)
    runtime = load_runtime("onnx", artifact, metadata=metadata)
    try:
        sig = runtime.signature
        if rows.shape[1] != sig.width:
            raise ValueError(
                f"{path.name} has {rows.shape[1]} features, the model takes {sig.width}"
            )
        outputs = runtime.predict(rows.astype(np.float32))
    finally:
        runtime.close()
    labels = values = None
    if sig.label_output and sig.label_output in outputs:
        labels = np.asarray(outputs[sig.label_output]).reshape(len(rows), -1)[:, 0]
    else:
        values = next(
            (np.asarray(v).reshape(len(rows), -1)[:, 0] for v in outputs.values()
             if np.asarray(v).dtype.kind in "fiu"),
            None,
        )  # fmt: skip
    return build_profile(rows, features, labels, values)
