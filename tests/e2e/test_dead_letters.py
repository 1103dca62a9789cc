"""Unknown models dead-letter, and `hotswap replay-dlq` brings them back once fixed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from scripts.harness import consume, publish_file, run_cli, send_raw
from service.core.messages import HEADER_REASON
from tests.brokers import WineWorker

pytestmark = pytest.mark.integration


def test_replay_dlq_rescores_unknown_model_records_after_the_model_arrives(
    wine_worker: WineWorker,
    trained: dict[str, Path],
) -> None:
    settings, _ = wine_worker()
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
    assert (
        "replayed 5 dead letters"
        in run_cli(settings, "replay-dlq", "--reason", "unknown_model").stdout
    )

    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 5)
    assert sorted(r.json()["id"] for r in scored) == [f"late-{i}" for i in range(5)]
    assert {r.json()["model"] for r in scored} == {"late"}
    assert (
        "replayed 0 dead letters"
        in run_cli(settings, "replay-dlq", "--reason", "unknown_model").stdout
    )
    assert (
        "would replay 1 dead letters"
        in run_cli(settings, "replay-dlq", "--dry-run", "--reason", "invalid_json").stdout
    )
