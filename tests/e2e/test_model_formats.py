"""Boosted trees on a real broker: an XGBoost classifier saved with joblib, published
with ``hotswap publish`` as a user would, scores like the model itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import orjson
import pytest
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

from scripts.harness import WorkerProcess, consume, run_cli, send_raw, wait_for
from service.core.settings import Settings

pytestmark = pytest.mark.integration

xgb = pytest.importorskip("xgboost")
pytest.importorskip("onnxmltools")


def test_xgboost_classifier_from_joblib_scores_like_predict_proba(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    tmp_path: Path,
) -> None:
    wine = load_wine()
    x_train, x_test, y_train, _ = train_test_split(
        wine.data, wine.target, test_size=0.3, random_state=0, stratify=wine.target
    )
    model = xgb.XGBClassifier(n_estimators=40, max_depth=3, random_state=0)
    model.fit(x_train, y_train)
    path = tmp_path / "wine-xgb.joblib"
    joblib.dump(model, path)

    settings = make_settings()
    done = run_cli(settings, "publish", str(path), "--name", "wine-xgb", "--version", "1")
    assert "published wine-xgb version 1" in done.stdout, done.stdout + done.stderr
    worker = workers(settings)
    worker.wait_ready()
    wait_for(lambda: worker.model_version("wine-xgb") == "1", 30, "wine-xgb v1 serving")

    rows = x_test.tolist()
    send_raw(
        settings,
        settings.data_topic,
        [
            (f"r{i}".encode(), orjson.dumps({"id": f"r{i}", "model": "wine-xgb", "features": r}))
            for i, r in enumerate(rows)
        ],
    )
    scored = consume(
        settings,
        settings.scored_topic,
        until=lambda rs: len({r.json()["id"] for r in rs}) >= len(rows),
    )
    assert {r.json()["id"] for r in scored} == {f"r{i}" for i in range(len(rows))}, worker.tail()
    expected = model.predict_proba(x_test)
    labels = model.predict(x_test)
    # Every scored record (a redelivered one too) carries the model's own answer.
    for record in scored:
        doc = record.json()
        i = int(doc["id"][1:])
        assert (doc["model"], doc["version"]) == ("wine-xgb", "1")
        assert doc["label"] == int(labels[i])
        assert list(doc["probabilities"]) == ["0", "1", "2"]
        got = np.array(list(doc["probabilities"].values()))
        np.testing.assert_allclose(got, expected[i], atol=1e-4, err_msg=f"row {i}")
    assert set(labels.tolist()) == {0, 1, 2}  # the rows exercise every class
