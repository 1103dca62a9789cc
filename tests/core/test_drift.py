"""Drift: the reference profile, PSI per feature and of predictions, the window, the gauges."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core.drift import DriftMonitor, psi
from service.core.metrics import Metrics
from service.core.observe import Observer
from service.core.registry import ModelRegistry, ServingModel
from service.core.scoring import InputRecord, Scorer
from service.tools.reference import reference_profile
from tests.models import BuiltModel, MessageFactory


@pytest.fixture(scope="module")
def wine_rows() -> tuple[np.ndarray, list[str]]:
    from sklearn.datasets import load_wine

    wine = load_wine()
    return wine.data.astype(np.float64), list(wine.feature_names)


@pytest.fixture
def profiled(
    tmp_path: Path,
    wine_model: BuiltModel,
    make_message: MessageFactory,
    wine_rows: tuple[np.ndarray, list[str]],
) -> ServingModel:
    rows, names = wine_rows
    path = tmp_path / "reference.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["target", *reversed(names)])  # any column order, extra columns ignored
        writer.writerows([0, *reversed(row.tolist())] for row in rows)
    metadata: dict[str, Any] = wine_model.metadata()
    metadata["drift_profile"] = reference_profile(path, wine_model.onnx, metadata)
    assert len(str(metadata["drift_profile"])) < 8000, "kilobytes, not the rows"
    return ModelRegistry().build(make_message(metadata=metadata))


def stream(rows: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    return rows[np.random.default_rng(seed).integers(0, len(rows), n)].astype(np.float32)


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    e = np.array([10.0, 10, 10, 10])
    assert psi(e, e) == pytest.approx(0.0)
    assert psi(np.array([20.0, 10, 5, 5]), e) < psi(np.array([40.0, 0, 0, 0]), e)


def test_a_shifted_feature_drifts_and_the_others_do_not(
    profiled: ServingModel, wine_rows: tuple[np.ndarray, list[str]]
) -> None:
    rows, _ = wine_rows
    monitor = DriftMonitor(None, window=5000, max_features=5)
    for seed in range(5):
        batch = stream(rows, 1000, seed)
        batch[:, 0] += 2 * rows[:, 0].std()  # alcohol, two standard deviations up
        monitor.watch(profiled, batch, profiled.runtime.predict(batch))
    view = monitor.view("wine")
    assert view is not None
    assert view["window"] == 5000
    by_name = {f["name"]: f["psi"] for f in view["features"]}
    assert by_name["alcohol"] > 0.25
    assert all(v < 0.1 for n, v in by_name.items() if n != "alcohol"), by_name
    assert view["prediction"]["psi"] is not None


def test_the_window_forgets_old_batches(
    profiled: ServingModel, wine_rows: tuple[np.ndarray, list[str]]
) -> None:
    rows, _ = wine_rows
    monitor = DriftMonitor(None, window=2000, max_features=5)
    shifted = stream(rows, 1000)
    shifted[:, 3] += 10 * rows[:, 3].std()
    monitor.watch(profiled, shifted, profiled.runtime.predict(shifted))
    for seed in range(1, 4):
        batch = stream(rows, 1000, seed)
        monitor.watch(profiled, batch, profiled.runtime.predict(batch))
    view = monitor.view("wine")
    assert view is not None
    assert view["window"] <= 3000
    assert max(f["psi"] for f in view["features"]) < 0.1, "the shifted batch left the window"


def test_gauges_cover_the_most_drifted_features_only(
    profiled: ServingModel, wine_rows: tuple[np.ndarray, list[str]]
) -> None:
    rows, names = wine_rows
    metrics = Metrics()
    metrics.swapped("wine", "1", None)
    monitor = DriftMonitor(metrics, window=1000, max_features=3)
    batch = stream(rows, 1000)
    batch[:, 5] += 5 * rows[:, 5].std()
    monitor.watch(profiled, batch, profiled.runtime.predict(batch))
    text = metrics.render().decode()
    lines = [line for line in text.splitlines() if line.startswith("hotswap_feature_drift{")]
    assert len(lines) == 3
    assert any(f'feature="{names[5]}"' in line for line in lines)
    assert "hotswap_prediction_drift{" in text


def test_the_scorer_hands_its_batches_to_drift_monitoring(
    profiled: ServingModel, wine_rows: tuple[np.ndarray, list[str]]
) -> None:
    import orjson

    registry = ModelRegistry()
    registry.install(profiled)
    scorer = Scorer(registry, max_record_bytes=10_000)
    monitor = DriftMonitor(None, window=1000, max_features=5)
    scorer.observer = Observer(drift=monitor)
    rows, _ = wine_rows
    records = [
        InputRecord(b"k", orjson.dumps({"id": i, "model": "wine", "features": row.tolist()}))
        for i, row in enumerate(rows)
    ]
    scorer.score(records)
    view = monitor.view("wine")
    assert view is not None
    assert view["window"] == len(rows)
    assert max(f["psi"] for f in view["features"]) < 0.01, "the reference itself does not drift"
