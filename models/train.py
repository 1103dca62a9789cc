"""Train the example models on scikit-learn's bundled wine data.

Each model is saved as ``NAME.joblib`` (the estimator, as a training pipeline
would leave it) plus ``NAME.meta.json`` (feature names, accuracy and a few
sample rows). ``hotswap publish NAME.joblib`` converts it to ONNX, checks
parity on the sample rows and publishes it. Two kinds, as in the reference
tutorial's provider: a logistic-regression pipeline and a random forest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import orjson
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

__all__ = ["KINDS", "train_all", "train_model"]

logger = logging.getLogger(__name__)

KINDS: dict[str, Callable[[int], Any]] = {
    "wine-logreg": lambda seed: make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
    ),
    "wine-forest": lambda seed: RandomForestClassifier(
        n_estimators=50, max_depth=6, random_state=seed
    ),
    "wine-tree": lambda seed: DecisionTreeClassifier(max_depth=4, random_state=seed),
}


def train_model(
    kind: str, out_dir: Path, *, seed: int = 0, n_estimators: int | None = None
) -> Path:
    """Fit one kind on wine, write ``KIND.joblib`` and ``KIND.meta.json``; return the joblib."""
    wine = load_wine()
    x_train, x_test, y_train, y_test = train_test_split(
        wine.data, wine.target, test_size=0.3, random_state=seed, stratify=wine.target
    )
    estimator = KINDS[kind](seed)
    if n_estimators is not None and hasattr(estimator, "n_estimators"):
        estimator.set_params(n_estimators=n_estimators, max_depth=None)
    estimator.fit(x_train, y_train)
    accuracy = float(estimator.score(x_test, y_test))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{kind}.joblib"
    joblib.dump(estimator, path)
    meta = {
        "feature_names": list(wine.feature_names),
        "dataset": "sklearn wine",
        "kind": kind,
        "test_accuracy": round(accuracy, 4),
        "sample_rows": x_test[:16].astype("float32").tolist(),
    }
    (out_dir / f"{kind}.meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    logger.info("trained %s: test accuracy %.3f -> %s", kind, accuracy, path)
    return path


def train_all(out_dir: Path, *, seed: int = 0) -> list[Path]:
    return [train_model(kind, out_dir, seed=seed) for kind in KINDS]
