"""MLflow's registry to serving workers: publish models:/NAME@ALIAS, and follow an alias.

A real ``mlflow server`` (one per session), a real broker, real workers. The
follow tests move their own alias and wait for the worker to serve the
version it points at: through the webhook (``--resync 600``, so only a
delivery can explain a swap within seconds) and through polling
(``--no-webhook``). A follow stopped and started again publishes nothing it
already published, and an alias moved back is served again from the archive.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from scripts.harness import ConsumedRecord, WorkerProcess, consume, run_cli, send_raw, wait_for
from service.core.settings import Settings
from tests.mlflowserver import Follow, WineRegistry

pytestmark = pytest.mark.integration

ROWS = [0, 1, 2, 59, 60, 61, 130, 131, 132]


def _scored_labels(settings: Settings, registry: WineRegistry, version: str) -> list[int]:
    records = [
        (
            f"r{i}".encode(),
            orjson.dumps(
                {
                    "id": f"r{i}",
                    "model": registry.name,
                    "features": [float(v) for v in registry.features.iloc[i]],
                }
            ),
        )
        for i in ROWS
    ]
    send_raw(settings, settings.data_topic, records)
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= len(ROWS))
    by_id = {r.json()["id"]: r.json() for r in scored}
    assert {s["version"] for s in by_id.values()} == {version}
    return [int(by_id[f"r{i}"]["label"]) for i in ROWS]


def _model_messages(settings: Settings, name: str, count: int) -> list[dict[str, object]]:
    """The model topic's messages for ``name``, read until ``count`` of them are there."""

    def mine(records: list[ConsumedRecord]) -> list[ConsumedRecord]:
        return [r for r in records if r.key == name.encode()]

    records = consume(settings, settings.model_topic, until=lambda rs: len(mine(rs)) >= count)
    return [r.json() for r in mine(records)]


def test_publish_champion_serves_the_registered_models_predictions(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    wine_registry: WineRegistry,
) -> None:
    wine_registry.set_alias("champion", "2")
    settings = make_settings()
    done = run_cli(settings, "publish", f"models:/{wine_registry.name}@champion", timeout=300)
    assert f"published {wine_registry.name} version 2 " in done.stdout, done.stdout
    worker = workers(settings)
    worker.wait_ready()
    wait_for(lambda: worker.model_version(wine_registry.name) == "2", 30, "version 2")
    expected = wine_registry.predict("2", wine_registry.features.iloc[ROWS])
    assert _scored_labels(settings, wine_registry, "2") == expected

    [message] = _model_messages(settings, wine_registry.name, 1)
    metadata = message["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["feature_names"] == list(wine_registry.features.columns)
    mlflow = metadata["mlflow"]
    assert mlflow["run_id"] == wine_registry.run_ids["2"]
    assert mlflow["tags"] == {"strength": "0.001"}
    assert mlflow["alias"] == "champion"
    assert mlflow["flavour"] == "sklearn"
    assert "inputs" in mlflow["signature"]
    assert metadata["parity_max_abs_diff"] <= 1e-4


def test_follow_by_webhook_and_a_restart_republishes_nothing(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    wine_registry: WineRegistry,
    tmp_path: Path,
) -> None:
    name, uri = wine_registry.name, f"models:/{wine_registry.name}@live_hook"
    wine_registry.set_alias("live_hook", "1")
    settings = make_settings()
    follow = Follow(settings, wine_registry.uri, tmp_path / "follow1", uri, "--resync", "600")
    try:
        assert "(webhook http://127.0.0.1:" in follow.wait_line("following ")
        follow.wait_line(f"published {name} version 1 ", timeout=180)
        worker = workers(settings)
        worker.wait_ready()
        wait_for(lambda: worker.model_version(name) == "1", 30, "version 1")

        wine_registry.set_alias("live_hook", "2")  # MLflow calls the webhook
        follow.wait_line(f"published {name} version 2 ", timeout=120)
        wait_for(lambda: worker.model_version(name) == "2", 30, "version 2 by webhook")
    finally:
        assert follow.stop() == 0

    again = Follow(settings, wine_registry.uri, tmp_path / "follow2", uri, "--resync", "600")
    try:
        again.wait_line(f"{name} version 2 ({uri}) is already published", timeout=180)
        assert [m["version"] for m in _model_messages(settings, name, 2)] == ["1", "2"]

        wine_registry.set_alias("live_hook", "1")  # moved back: served from the archive
        again.wait_line(f"published {name} version 1 again, from the archive", timeout=120)
        wait_for(lambda: worker.model_version(name) == "1", 30, "version 1 again")
    finally:
        assert again.stop() == 0


def test_follow_by_polling(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    wine_registry: WineRegistry,
    tmp_path: Path,
) -> None:
    name, uri = wine_registry.name, f"models:/{wine_registry.name}@live_poll"
    wine_registry.set_alias("live_poll", "1")
    settings = make_settings()
    args = (uri, "--no-webhook", "--poll-interval", "1")
    follow = Follow(settings, wine_registry.uri, tmp_path / "follow", *args)
    try:
        assert "(every 1s)" in follow.wait_line("following ")
        follow.wait_line(f"published {name} version 1 ", timeout=180)
        worker = workers(settings)
        worker.wait_ready()
        wait_for(lambda: worker.model_version(name) == "1", 30, "version 1")
        wine_registry.set_alias("live_poll", "2")
        follow.wait_line(f"published {name} version 2 ", timeout=120)
        wait_for(lambda: worker.model_version(name) == "2", 30, "version 2 by polling")
        assert _scored_labels(settings, wine_registry, "2") == wine_registry.predict(
            "2", wine_registry.features.iloc[ROWS]
        )
    finally:
        assert follow.stop() == 0
