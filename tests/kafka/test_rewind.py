"""Reading an uncommitted batch again (after an aborted transaction or a failed scoring).

On the real broker: the consumer goes back to the group's committed offset, and a
partition with nothing committed yet (a new group's first batch) goes back to the
first offset the batch read, never on from where the consumer stands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from service.core.settings import Settings
from service.kafka.batch import records_of, rewind
from service.kafka.clients import ensure_topics, rdkafka_config

pytestmark = pytest.mark.integration


@pytest.fixture
def reader(make_settings: Callable[..., Settings]) -> Iterator[tuple[Consumer, str]]:
    """A group consumer on partition 0 of a topic holding 20 records, nothing committed."""
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    topic = settings.data_topic
    producer = Producer(rdkafka_config(settings, acks="all"))
    for i in range(20):
        producer.produce(topic, b"v%d" % i, b"k", 0)
    assert producer.flush(30) == 0, "records not acknowledged"
    config = {"group.id": settings.app_id, "enable.auto.commit": False}
    consumer = Consumer(rdkafka_config(settings, **config, **{"auto.offset.reset": "earliest"}))
    _wait_for_coordinator(consumer, TopicPartition(topic, 0))
    consumer.assign([TopicPartition(topic, 0)])
    yield consumer, topic
    consumer.close()


def _wait_for_coordinator(consumer: Consumer, tp: TopicPartition) -> None:
    """A new group's coordinator may not answer yet (``NOT_COORDINATOR``); an assigned
    partition whose committed offset could not be read is never fetched."""
    for _ in range(100):
        try:
            if all(answer.error is None for answer in consumer.committed([tp], timeout=5.0)):
                return
        except KafkaException:
            pass
        time.sleep(0.2)
    raise AssertionError("the group coordinator never answered")


def _take(consumer: Consumer, n: int) -> list[Message]:
    taken: list[Message] = []
    for _ in range(100):
        taken += consumer.consume(n - len(taken), 0.2)
        if len(taken) >= n:
            return taken
    raise AssertionError(f"only {len(taken)} of {n} records arrived")


def test_a_first_batch_with_nothing_committed_is_read_again(
    reader: tuple[Consumer, str],
) -> None:
    consumer, _ = reader
    first = _take(consumer, 8)
    second = _take(consumer, 8)  # fetched while the first was being delivered
    _, _, ends, firsts = records_of(second + first)  # any order
    assert [tp.offset for tp in ends] == [16]
    assert [tp.offset for tp in firsts] == [0]
    rewind(consumer, ends, firsts, lambda: False)
    assert [m.offset() for m in _take(consumer, 20)] == list(range(20))


def test_a_batch_is_read_again_from_the_committed_offset(reader: tuple[Consumer, str]) -> None:
    consumer, topic = reader
    batch = _take(consumer, 12)
    partition = batch[0].partition()
    assert partition is not None
    consumer.commit(offsets=[TopicPartition(topic, partition, 5)], asynchronous=False)
    _, _, ends, firsts = records_of(batch)
    rewind(consumer, ends, firsts, lambda: False)
    assert [m.offset() for m in _take(consumer, 15)] == list(range(5, 20))
