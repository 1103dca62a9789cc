"""Unknown models dead-letter, and `hotswap replay-dlq` brings them back once fixed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from scripts.harness import REPO, WorkerProcess, consume, publish_file, send_raw, settings_env
from service.messages import HEADER_REASON
from service.settings import Settings

pytestmark = pytest.mark.integration


def _cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_replay_dlq_rescores_unknown_model_records_after_the_model_arrives(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    settings = make_settings()
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = workers(settings)
    worker.wait_ready()
    early = [
        (
            f"late-{i}".encode(),
            orjson.dumps({"id": f"late-{i}", "model": "late", "features": [1.0] * 13}),
        )
        for i in range(5)
    ]
    send_raw(settings, settings.data_topic, [*early, (b"junk", b"{junk")])
    dead = consume(settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= 6)
    reasons = sorted(r.headers[HEADER_REASON].decode() for r in dead)
    assert reasons == ["invalid_json"] + ["unknown_model"] * 5

    publish_file(settings, trained["wine-tree"], "late", "1")
    assert "replayed 5 dead letters" in _cli(settings, "replay-dlq", "--reason", "unknown_model")

    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 5)
    assert sorted(r.json()["id"] for r in scored) == [f"late-{i}" for i in range(5)]
    assert {r.json()["model"] for r in scored} == {"late"}
    assert "replayed 0 dead letters" in _cli(settings, "replay-dlq", "--reason", "unknown_model")
    assert "would replay 1 dead letters" in _cli(
        settings, "replay-dlq", "--dry-run", "--reason", "invalid_json"
    )
