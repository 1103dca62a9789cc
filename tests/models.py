"""Unit fixtures: tiny models trained and converted in memory, never committed as binaries."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pytest

from service.core.messages import ModelMessage

# Three rows of each wine class (the bundled data is sorted by class).
WINE_SAMPLE_INDEX = [0, 1, 2, 59, 60, 61, 130, 131, 132]


@dataclass(frozen=True)
class BuiltModel:
    """An ONNX model plus what a publisher would say about it."""

    onnx: bytes
    feature_names: list[str]
    classes: list[Any]
    sample_inputs: list[list[float]]
    sample_labels: list[Any]

    @property
    def width(self) -> int:
        return len(self.feature_names)

    def metadata(self, *, samples: bool = True) -> dict[str, Any]:
        meta: dict[str, Any] = {"feature_names": list(self.feature_names), "classes": self.classes}
        if samples:
            meta["samples"] = {"inputs": self.sample_inputs, "labels": self.sample_labels}
        return meta


class MessageFactory(Protocol):
    def __call__(
        self,
        model: BuiltModel | None = None,
        *,
        name: str = "wine",
        version: str = "1",
        artifact: bytes | None = None,
        metadata: dict[str, Any] | None = None,
        sha256: str | None = None,
    ) -> ModelMessage: ...


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _convert(estimator: Any, rows: np.ndarray) -> tuple[bytes, list[Any], list[Any]]:
    from service.core.convert import sklearn_to_onnx

    converted = sklearn_to_onnx(estimator, rows)
    assert converted.classes is not None
    assert converted.sample_labels is not None
    return converted.onnx, converted.classes, converted.sample_labels


@pytest.fixture(scope="session")
def wine_model() -> BuiltModel:
    """A scaled logistic regression on sklearn's wine data: 13 features, classes 0/1/2."""
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wine = load_wine()
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    estimator.fit(wine.data, wine.target)
    rows = wine.data[WINE_SAMPLE_INDEX].astype(np.float32)
    onnx, classes, labels = _convert(estimator, rows)
    return BuiltModel(onnx, list(wine.feature_names), classes, rows.tolist(), labels)


@pytest.fixture(scope="session")
def four_feature_model() -> BuiltModel:
    """An iris-shaped model (4 features, 3 classes) on seeded random data."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(150, 4)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1)
    estimator = LogisticRegression(max_iter=1000).fit(x, y)
    rows = x[:8]
    onnx, classes, labels = _convert(estimator, rows)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return BuiltModel(onnx, names, classes, rows.tolist(), labels)


@pytest.fixture
def make_message(wine_model: BuiltModel) -> MessageFactory:
    """Build a valid inline ``ModelMessage`` (wine by default); override any part of it."""

    def make(
        model: BuiltModel | None = None,
        *,
        name: str = "wine",
        version: str = "1",
        artifact: bytes | None = None,
        metadata: dict[str, Any] | None = None,
        sha256: str | None = None,
    ) -> ModelMessage:
        model = model or wine_model
        data = model.onnx if artifact is None else artifact
        return ModelMessage(
            name=name,
            version=version,
            description=f"{name} v{version}",
            data=base64.b64encode(data).decode(),
            sha256=sha256 or sha256_of(data),
            metadata=model.metadata() if metadata is None else metadata,
        )

    return make
