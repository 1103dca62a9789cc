"""Partitions added to the data topic while workers run are read within the metadata refresh.

librdkafka notices new partitions of a subscribed topic when it refreshes its metadata:
by default every 5 minutes, while their records waited unread and ``/ready`` said 200.
The data consumer refreshes every 30 s; this waits for the records, not for a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

from scripts.harness import WorkerProcess, consume, publish_file, send_raw
from service.core.settings import Settings
from service.kafka.clients import ensure_topics, rdkafka_config

pytestmark = pytest.mark.integration


def test_records_on_partitions_added_while_running_are_scored(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    settings = make_settings(data_partitions=2)
    asyncio.run(ensure_topics(settings))
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = workers(settings)
    worker.wait_ready()

    def records(prefix: str) -> list[tuple[bytes | None, bytes | None]]:
        value = {"model": "wine", "features": [13.0] * 13}
        return [(None, orjson.dumps({"id": f"{prefix}{i}", **value})) for i in range(10)]

    send_raw(settings, settings.data_topic, records("before-"), partition=0)
    consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 10)  # reading
    admin = AdminClient(rdkafka_config(settings))
    for future in admin.create_partitions([NewPartitions(settings.data_topic, 4)]).values():
        future.result(30)
    send_raw(settings, settings.data_topic, records("p2-"), partition=2)
    send_raw(settings, settings.data_topic, records("p3-"), partition=3)
    # 180 s, the default bound: under librdkafka's default refresh these took 300 s.
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 30)
    ids = {r.json()["id"] for r in scored}
    assert {f"p{p}-{i}" for p in (2, 3) for i in range(10)} <= ids
