"""Ground truth on a real broker: labels joined to predictions, live quality, restarts.

Records are produced keyed by their id (``hotswap produce``'s way), labels
with the same key on the labels topic: the same partitioner puts both on the
same partition number.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from scripts.harness import (
    ConsumedRecord,
    RolloutStart,
    WorkerProcess,
    consume,
    publish_file,
    run_cli,
    send_raw,
    wait_for,
)
from service.core.settings import Settings
from service.tools.produce import produce_records
from tests.brokers import WineWorker

pytestmark = pytest.mark.integration

Workers = Callable[[Settings], WorkerProcess]


def wine_truth(i: int) -> int:
    """The true class of the i-th record ``produce_records`` sends (rows cycle in order)."""
    from sklearn.datasets import load_wine

    target = load_wine().target
    return int(target[i % len(target)])


def send_labels(settings: Settings, prefix: str, indices: range, *, wrong: bool = False) -> None:
    items = []
    for i in indices:
        rid = f"{prefix}-{i}"
        label = (wine_truth(i) + 1) % 3 if wrong else wine_truth(i)
        items.append((rid.encode(), orjson.dumps({"id": rid, "label": label})))
    send_raw(settings, settings.labels_topic, items)


def scored(settings: Settings, prefix: str, count: int) -> dict[str, Any]:
    """The scored documents of ``prefix-0 .. prefix-(count-1)``, by id."""

    def done(records: list[ConsumedRecord]) -> bool:
        return len({r.json()["id"] for r in records if r.json()["id"].startswith(prefix)}) >= count

    found = consume(settings, settings.scored_topic, until=done)
    return {r.json()["id"]: r.json() for r in found if r.json()["id"].startswith(prefix + "-")}


def quality(worker: WorkerProcess, version: str = "1") -> dict[str, Any]:
    doc = worker.get("/models/wine/quality").json()
    return next((v for v in doc["versions"] if v["version"] == version), {})


def wait_labelled(worker: WorkerProcess, n: int, version: str = "1", timeout: float = 30) -> None:
    wait_for(lambda: quality(worker, version).get("labelled") == n, timeout, f"{n} labelled")


def own_accuracy(docs: dict[str, Any], prefix: str, indices: range) -> float:
    right: int = sum(docs[f"{prefix}-{i}"]["label"] == wine_truth(i) for i in indices)
    return right / len(indices)


def test_labels_first_predictions_first_and_duplicates(wine_worker: WineWorker) -> None:
    settings, worker = wine_worker()
    send_labels(settings, "first", range(40))  # labels wait for their predictions
    asyncio.run(produce_records(settings, count=40, id_prefix="first"))
    asyncio.run(produce_records(settings, count=120, id_prefix="then"))
    docs = scored(settings, "first", 40) | scored(settings, "then", 120)
    send_labels(settings, "then", range(120))  # predictions wait for their labels
    wait_labelled(worker, 160)
    send_labels(settings, "then", range(10))  # duplicates
    wait_for(lambda: worker.metric('hotswap_labels_total{outcome="duplicate"}') == 10, 60, "dups")

    mine = (
        own_accuracy(docs, "first", range(40)) * 40 + own_accuracy(docs, "then", range(120)) * 120
    ) / 160
    figures = quality(worker)
    assert figures["labelled"] == 160
    assert abs(figures["accuracy"] - mine) < 0.01, (figures, mine)
    assert figures["log_loss"] > 0
    assert 0 <= figures["brier"] <= 2
    assert figures["since_began"]["labelled"] == 160
    assert worker.metric('hotswap_labels_total{outcome="matched"}') == 160
    table = run_cli(settings, "quality", "wine", "--url", worker.url).stdout
    assert "160" in table
    assert f"{figures['accuracy']:.4f}" in table
    gauge = worker.metric('hotswap_model_quality{metric="accuracy",model="wine",version="1"}')
    assert abs(gauge - mine) < 0.01


def test_late_and_unmatched_labels_are_counted(wine_worker: WineWorker) -> None:
    """Only waits that are over: a slower machine makes them later, never on time."""
    settings, worker = wine_worker(label_window=4.0)
    asyncio.run(produce_records(settings, count=5, id_prefix="late"))
    scored(settings, "late", 5)
    time.sleep(5)  # their wait is over, however fast they were scored
    send_labels(settings, "late", range(5))
    send_labels(settings, "nobody", range(5))  # no prediction will come
    wait_for(lambda: worker.metric('hotswap_labels_total{outcome="late"}') == 5, 60, "late")
    wait_for(lambda: worker.metric('hotswap_labels_total{outcome="unmatched"}') == 5, 60, "unm")
    assert worker.metric('hotswap_labels_total{outcome="matched"}') == 0
    assert worker.metric("hotswap_predictions_unlabelled_total") == 5
    assert not quality(worker), "late labels join nothing"


def test_a_restart_mid_join_loses_nothing_and_counts_nothing_twice(
    wine_worker: WineWorker, workers: Workers
) -> None:
    settings, worker = wine_worker()
    asyncio.run(produce_records(settings, count=100, id_prefix="r"))
    docs = scored(settings, "r", 100)
    send_labels(settings, "r", range(50))
    wait_labelled(worker, 50)
    assert worker.stop() == 0, worker.tail()

    worker = workers(settings)  # the join state comes back from its changelog
    worker.wait_ready()
    wait_labelled(worker, 50)
    send_labels(settings, "r", range(50, 100))  # predictions made before the restart
    send_labels(settings, "r", range(10))  # labelled before the restart: duplicates
    wait_labelled(worker, 100)
    wait_for(lambda: worker.metric('hotswap_labels_total{outcome="duplicate"}') == 10, 60, "dups")
    assert abs(quality(worker)["accuracy"] - own_accuracy(docs, "r", range(100))) < 0.01


def _stump(tmp_path: Path) -> Path:
    """A deliberately worse wine classifier: one split."""
    import joblib
    from sklearn.datasets import load_wine
    from sklearn.tree import DecisionTreeClassifier

    wine = load_wine()
    path = tmp_path / "stump.joblib"
    joblib.dump(
        DecisionTreeClassifier(max_depth=1, random_state=0).fit(wine.data, wine.target), path
    )
    return path


def _decided(worker: WorkerProcess, stage: str, candidate: str) -> dict[str, Any]:
    def there() -> dict[str, Any] | None:
        view = worker.get("/models/wine/rollout").json()
        ok = view.get("stage") == stage and view.get("candidate") == candidate
        return view if ok and view.get("decision") else None

    return wait_for(there, 60, f"{stage} of {candidate}")


def test_the_truth_aborts_a_worse_shadow_and_promotes_a_better_one(
    wine_worker: WineWorker, trained: dict[str, Path], tmp_path: Path
) -> None:
    settings, worker = wine_worker()
    shadow = RolloutStart(min_labels=150, max_quality_loss=0.05)  # `--shadow --min-labels ...`
    publish_file(settings, _stump(tmp_path), "wine", "2", rollout=shadow)
    wait_for(lambda: worker.get("/models/wine/rollout").json().get("candidate") == "2", 30, "v2")
    asyncio.run(produce_records(settings, count=200, id_prefix="w"))
    docs = scored(settings, "w", 200)
    assert worker.get("/models/wine/rollout").json().get("decision") is None, "no labels yet"
    send_labels(settings, "w", range(200))
    view = _decided(worker, "aborted", "2")
    truth = view["decision"]["figures"]["truth"]
    assert truth["labelled"] >= 150
    serving_accuracy = own_accuracy(docs, "w", range(200))
    assert abs(truth["serving"]["accuracy"] - serving_accuracy) < 0.01
    assert truth["candidate"]["accuracy"] < serving_accuracy - 0.05
    history = worker.get("/models/wine/history").json()
    aborted = [h for h in history if h["status"] == "aborted" and h["version"] == "2"]
    assert len(aborted) == 1
    assert "quality" in aborted[0]["why"]
    assert "accuracy" in aborted[0]["why"]
    assert worker.model_version("wine") == "1"

    publish_file(settings, trained["wine-forest"], "wine", "3", rollout=shadow)
    wait_for(lambda: worker.get("/models/wine/rollout").json().get("candidate") == "3", 30, "v3")
    asyncio.run(produce_records(settings, count=200, id_prefix="b"))
    scored(settings, "b", 200)
    send_labels(settings, "b", range(200))
    view = _decided(worker, "promoted", "3")
    assert view["decision"]["figures"]["truth"]["labelled"] >= 150
    wait_for(lambda: worker.model_version("wine") == "3", 30, "v3 serving")


def test_a_shifted_feature_drifts_on_the_stream(
    make_settings: Callable[..., Settings],
    workers: Workers,
    trained: dict[str, Path],
    tmp_path: Path,
) -> None:
    from sklearn.datasets import load_wine

    wine = load_wine()
    reference = tmp_path / "wine.csv"
    header = ",".join(wine.feature_names)
    reference.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in wine.data))
    settings = make_settings(drift_window=1000)
    publish_file(settings, trained["wine-logreg"], "wine", "1", reference=reference)
    worker = workers(settings)
    worker.wait_ready()
    std = float(wine.data[:, 0].std())
    items = []
    for i in range(1500):
        row = [float(v) for v in wine.data[i % len(wine.data)]]
        row[0] += 2 * std  # alcohol, two standard deviations up
        value = orjson.dumps({"id": f"d-{i}", "model": "wine", "features": row})
        items.append((f"d-{i}".encode(), value))
    send_raw(settings, settings.data_topic, items)

    def drifted() -> dict[str, Any] | None:
        view = worker.get("/models/wine/drift").json()
        return view if view.get("window", 0) >= 1000 else None

    view = wait_for(drifted, 60, "a full drift window")
    assert view["version"] == "1"
    psi = {f["name"]: f["psi"] for f in view["features"]}
    assert psi["alcohol"] > 0.25
    assert all(v < 0.1 for name, v in psi.items() if name != "alcohol"), psi
    assert worker.metric('hotswap_feature_drift{feature="alcohol",model="wine"}') > 0.25
    assert "alcohol" in run_cli(settings, "quality", "wine", "--drift", "--url", worker.url).stdout


def test_a_rebalance_mid_join_moves_the_state_with_the_partitions(
    wine_worker: WineWorker, workers: Workers, make_settings: Callable[..., Settings]
) -> None:
    settings, first = wine_worker()
    asyncio.run(produce_records(settings, count=200, id_prefix="m"))
    docs = scored(settings, "m", 200)
    send_labels(settings, "m", range(100))
    wait_labelled(first, 100)

    second = workers(settings.model_copy(update={"http_port": make_settings().http_port}))
    second.wait_ready()
    wait_for(lambda: second.get("/ready").json()["assigned_partitions"] > 0, 60, "a rebalance")
    time.sleep(2)  # the labels feed follows the data feed's assignment within a second
    send_labels(settings, "m", range(100, 200))
    send_labels(settings, "m", range(20))  # duplicates, wherever their partition went

    def total() -> int:
        return sum(quality(w).get("labelled", 0) for w in (first, second))

    wait_for(lambda: total() == 200, 60, "200 labelled across both workers")
    dups = 'hotswap_labels_total{outcome="duplicate"}'
    wait_for(lambda: first.metric(dups) + second.metric(dups) == 20, 30, "20 duplicates")

    assert second.stop() == 0, second.tail()  # its partitions come back, with their state
    wait_labelled(first, 200, timeout=60)
    assert abs(quality(first)["accuracy"] - own_accuracy(docs, "m", range(200))) < 0.01
