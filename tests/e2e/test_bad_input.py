"""Bad models are rejected with a reason while the old one serves; bad records dead-letter."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import orjson
import pytest

from scripts.harness import (
    consume,
    publish_file,
    send_raw,
    wait_for,
)
from service.core.messages import HEADER_ERROR, HEADER_REASON, HEADER_SOURCE_OFFSET
from service.tools.produce import produce_records
from tests.brokers import WineWorker

pytestmark = pytest.mark.integration


def _model_message(name: str, version: str, artifact: bytes, sha256: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "name": name,
            "version": version,
            "format": "onnx",
            "data": base64.b64encode(artifact).decode(),
            "sha256": sha256 or hashlib.sha256(artifact).hexdigest(),
        }
    )


def test_corrupt_models_are_rejected_and_v1_keeps_serving(
    wine_worker: WineWorker,
    trained: dict[str, Path],
) -> None:
    settings, worker = wine_worker()

    send_raw(
        settings,
        settings.model_topic,
        [
            (b"wine", _model_message("wine", "2", b"\x00not an onnx model at all")),
            (b"wine", _model_message("wine", "3", b"some bytes", sha256="0" * 64)),
            (b"wine", b"{this is not json"),
        ],
    )

    def rejections() -> list[dict[str, str]] | None:
        history = worker.get("/models/wine/history").json()
        rejected = [h for h in history if h["status"] == "rejected"]
        return rejected if len(rejected) == 3 else None

    rejected = wait_for(rejections, 60, "three rejections in history")
    assert [(h["version"], h["reason"]) for h in rejected] == [
        ("2", "invalid_onnx"),
        ("3", "sha256_mismatch"),
        ("?", "invalid_message"),
    ]
    assert all(h["detail"] for h in rejected)
    assert worker.model_version("wine") == "1"
    assert (
        worker.metric('hotswap_model_rejections_total{model="wine",reason="sha256_mismatch"}') == 1
    )

    asyncio.run(produce_records(settings, count=50, id_prefix="after"))
    records = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 50)
    assert {r.json()["version"] for r in records} == {"1"}

    publish_file(settings, trained["wine-forest"], "wine", "4")
    wait_for(lambda: worker.model_version("wine") == "4", 60, "a later good version accepted")


def test_bad_records_go_to_the_dead_letter_topic_with_reasons(
    wine_worker: WineWorker,
    trained: dict[str, Path],
) -> None:
    settings, worker = wine_worker(data_partitions=1)
    good = orjson.dumps({"id": "good", "model": "wine", "features": [13.0] * 13})
    bad = {
        b"not json at all": "invalid_json",
        orjson.dumps({"id": "short", "model": "wine", "features": [1.0, 2.0]}): (
            "wrong_feature_count"
        ),
        orjson.dumps({"id": "who", "model": "no-such-model", "features": [1.0] * 13}): (
            "unknown_model"
        ),
        orjson.dumps([1, 2, 3]): "not_an_object",
        orjson.dumps({"id": "txt", "model": "wine", "features": ["a"] * 13}): "non_numeric",
    }
    items: list[tuple[bytes | None, bytes | None]] = []
    for value in bad:
        items += [(b"g", good), (b"b", value)]
    send_raw(settings, settings.data_topic, items)

    dead = consume(settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= len(bad))
    assert {r.value: r.headers[HEADER_REASON].decode() for r in dead} == {
        k: v for k, v in bad.items()
    }
    assert all(r.headers[HEADER_ERROR] for r in dead)
    assert all(int(r.headers[HEADER_SOURCE_OFFSET]) % 2 == 1 for r in dead)
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= len(bad))
    assert [r.json()["id"] for r in scored] == ["good"] * len(bad)
    assert worker.metric('hotswap_records_dead_lettered_total{reason="unknown_model"}') == 1
    assert worker.get("/ready").status_code == 200
