"""A random forest whose ONNX file is tens of MB, for the large-model swap.

``models.train.train_model("wine-forest", n_estimators=600)`` gives only about
0.5 MB: wine has 124 training rows, so its trees stay tiny whatever their
number. Trees grow with the data, so this forest is fitted, the same way
(``RandomForestClassifier``, unlimited depth), on wine rows resampled with
Gaussian noise; it still takes wine's 13 features and carries wine's sidecar
(feature names, real sample rows for the warm-up check), so the worker accepts
it as the next version of ``wine``. 600 trees on 8,000 rows: about 25 MB.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import orjson
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

__all__ = ["train_big_forest"]


def train_big_forest(out_dir: Path, *, trees: int = 600, rows: int = 8000) -> Path:
    """Fit the forest, write ``wine-big-forest.joblib`` + ``.meta.json``; return the joblib."""
    wine = load_wine()
    rng = np.random.default_rng(0)
    picked = rng.integers(0, len(wine.data), rows)
    noise = rng.normal(size=(rows, wine.data.shape[1])) * wine.data.std(axis=0) * 0.6
    forest = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=2)
    forest.fit(wine.data[picked] + noise, wine.target[picked])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "wine-big-forest.joblib"
    joblib.dump(forest, path)
    meta = {
        "feature_names": list(wine.feature_names),
        "kind": f"wine-forest, {trees} trees on {rows} noisy wine rows",
        "sample_rows": wine.data[:16].astype("float32").tolist(),
    }
    path.with_suffix(".meta.json").write_bytes(orjson.dumps(meta))
    return path
