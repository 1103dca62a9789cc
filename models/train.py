"""Train the example models on scikit-learn's bundled wine data.

Each model is saved as ``NAME.joblib`` (the estimator, as a training pipeline
would leave it) plus ``NAME.meta.json`` (feature names, accuracy and a few
sample rows) and ``NAME.reference.csv`` (the training rows, for drift).
``hotswap publish NAME.joblib`` converts it to ONNX, checks parity on the
sample rows and publishes it with the drift profile of the training rows.
Kinds as in the reference tutorial's provider: a logistic-regression pipeline,
a random forest (and a decision tree).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

__all__ = [
    "KINDS",
    "PAYMENT_FEATURES",
    "payment_record",
    "train_all",
    "train_model",
    "train_payments",
]

logger = logging.getLogger(__name__)

KINDS: dict[str, Callable[[int], Any]] = {
    "wine-logreg": lambda seed: make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
    ),
    "wine-forest": lambda seed: RandomForestClassifier(
        n_estimators=50, max_depth=6, random_state=seed
    ),
    "wine-tree": lambda seed: DecisionTreeClassifier(max_depth=4, random_state=seed),
    # Deliberately weak (one split, about 60 % accurate): the candidate the demo's labels abort.
    "wine-stump": lambda seed: DecisionTreeClassifier(max_depth=1, random_state=seed),
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
    # The training rows, for drift: publish finds them through the sidecar's "reference"
    # and sends their compact profile (quantile bins) with the model, never the rows.
    reference = out_dir / f"{kind}.reference.csv"
    np.savetxt(
        reference,
        x_train,
        fmt="%.6g",
        delimiter=",",
        header=",".join(wine.feature_names),
        comments="",
    )
    meta = {
        "feature_names": list(wine.feature_names),
        "dataset": "sklearn wine",
        "kind": kind,
        "test_accuracy": round(accuracy, 4),
        "sample_rows": x_test[:16].astype("float32").tolist(),
        "reference": reference.name,
    }
    (out_dir / f"{kind}.meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    logger.info("trained %s: test accuracy %.3f -> %s", kind, accuracy, path)
    return path


def train_all(out_dir: Path, *, seed: int = 0) -> list[Path]:
    return [train_model(kind, out_dir, seed=seed) for kind in KINDS]


#: The payments model's inputs: fields of an Avro payment record, one of them nested.
PAYMENT_FEATURES = ["amount", "merchant.risk", "card_present", "hour"]


def payment_record(rng: np.random.Generator, n: int) -> dict[str, Any]:
    """A synthetic payment (the demo's Avro stream): large, late, card-absent payments to
    risky merchants are the fraudulent ones."""
    fraud = rng.random() < 0.2
    risk = rng.uniform(0.5, 1) if fraud else rng.uniform(0, 0.6)
    return {
        "id": f"pay-{n}",
        "amount": round(float(rng.uniform(300, 2000) if fraud else rng.uniform(1, 200)), 2),
        "currency": "EUR",
        "merchant": {"name": f"shop-{int(rng.integers(0, 50))}", "risk": round(float(risk), 3)},
        "card_present": bool(not fraud and rng.random() < 0.7),
        "hour": int(rng.integers(0, 6) if fraud else rng.integers(7, 23)),
    }


def train_payments(out_dir: Path, *, seed: int = 0) -> Path:
    """A fraud classifier (labels 0 legitimate, 1 fraud) on synthetic payments, whose
    ``feature_names`` are the payment record's fields (``merchant.risk`` is nested)."""
    rng = np.random.default_rng(seed)
    records = [payment_record(rng, n) for n in range(2000)]
    x = np.asarray(
        [
            [r["amount"], r["merchant"]["risk"], float(r["card_present"]), r["hour"]]
            for r in records
        ],
        dtype=np.float32,
    )
    y = np.asarray([int(r["amount"] >= 300 and r["hour"] < 6) for r in records])
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    estimator.fit(x, y)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "payments.joblib"
    joblib.dump(estimator, path)
    meta = {"feature_names": PAYMENT_FEATURES, "dataset": "synthetic payments",
            "sample_rows": x[:16].tolist()}  # fmt: skip
    (out_dir / "payments.meta.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    logger.info("trained payments -> %s", path)
    return path
