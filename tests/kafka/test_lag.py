"""The lag a worker reports in its heartbeats, read from librdkafka's local state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from scripts.harness import send_raw
from service.core.settings import Settings
from service.kafka.clients import Lag, ensure_topics

pytestmark = pytest.mark.integration


def _fresh(consumer: Consumer, assigned: set[tuple[str, int]]) -> int | None:
    lag = Lag()
    lag.refresh(consumer, assigned)
    return lag.value


def test_lag_counts_what_is_not_read_yet(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    topic = settings.data_topic
    send_raw(settings, topic, [(b"one-key", b"v%d" % i) for i in range(100)])  # one partition
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers[0],
            "group.id": settings.app_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        assigned = {(topic, p) for p in range(settings.data_partitions)}
        consumer.assign([TopicPartition(t, p, 0) for t, p in assigned])
        assert _fresh(consumer, assigned) is None  # nothing fetched yet: not known, not 0

        taken = 0
        while taken < 30:
            taken += len(consumer.consume(30 - taken, 5.0))
        deadline = time.monotonic() + 10
        while _fresh(consumer, assigned) != 100 - taken:  # the empty partitions' answers
            assert time.monotonic() < deadline, _fresh(consumer, assigned)
            time.sleep(0.05)

        lag = Lag()
        lag.refresh(consumer, assigned)
        while taken < 100:
            taken += len(consumer.consume(100 - taken, 5.0))
        lag.refresh(consumer, assigned)  # within the second: not read again
        assert lag.value == 70
        assert _fresh(consumer, assigned) == 0
        assert _fresh(consumer, set()) == 0
    finally:
        consumer.close()
