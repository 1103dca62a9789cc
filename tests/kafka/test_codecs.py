"""Records and models written with every Kafka codec are read; the worker writes any codec.

Class 1 of the promises: producers in real deployments compress (Java clients
often with zstd, lz4 or snappy). Each case publishes the model and the records
with Kafka's own Java producer and that codec, runs a worker that writes with
the same codec, and reads every scored record back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from scripts.harness import WorkerProcess, consume
from service.core.messages import encode_model_message
from service.core.settings import Settings
from service.kafka.clients import ensure_topics
from service.tools.publish import PublishRequest, build_message
from tests.kafka.javaclient import java_produce

pytestmark = pytest.mark.integration

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_on_both_topics_and_on_output(
    codec: str,
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    settings = make_settings(producer_compression=codec, data_partitions=2)
    asyncio.run(ensure_topics(settings))
    message = build_message(PublishRequest(path=trained["wine-logreg"], name="wine", version="1"))
    java_produce(
        settings.bootstrap_servers[0],
        settings.model_topic,
        codec,
        [("wine", encode_model_message(message).decode())],
    )
    worker = workers(settings)
    worker.wait_ready()
    assert worker.model_version("wine") == "1", "the model written with this codec was not read"

    ids = [f"{codec}-{i}" for i in range(200)]
    lines = [
        (rid, orjson.dumps({"id": rid, "model": "wine", "features": [13.0] * 13}).decode())
        for rid in ids
    ]
    java_produce(settings.bootstrap_servers[0], settings.data_topic, codec, lines)
    scored = consume(
        settings, settings.scored_topic, until=lambda rs: len(rs) >= len(ids), timeout=60
    )
    assert sorted(r.json()["id"] for r in scored) == sorted(ids)
    assert worker.get("/ready").status_code == 200
    dead = consume(settings, settings.dead_letter_topic, until=lambda rs: False, timeout=1)
    assert dead == []
