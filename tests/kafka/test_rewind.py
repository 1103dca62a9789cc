"""Where the data consumer reads from, on the real broker, when something went wrong.

A batch that was not committed (an aborted transaction, a failed scoring) is read
again from the group's committed offset, or, with nothing committed yet (a new
group's first batch), from the first offset the batch read, never on from where the
consumer stands. Partitions whose committed offsets could not be read are assigned
again rather than left unfetched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from scripts.harness import isolated_settings, send_raw
from scripts.localkafka import LocalKafka, free_port
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.kafka.batch import rewind
from service.kafka.clients import ensure_topics, group_consumer_config, rdkafka_config
from service.kafka.fetched import fetch, records_of, unstarted
from service.kafka.publisher import Publisher
from service.kafka.transactions import Transactions

pytestmark = pytest.mark.integration

_TWENTY = [(b"k", b"v%d" % i) for i in range(20)]


@pytest.fixture
def reader(make_settings: Callable[..., Settings]) -> Iterator[tuple[Consumer, str]]:
    """A group consumer on partition 0 of a topic holding 20 records, nothing committed."""
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    topic = settings.data_topic
    send_raw(settings, topic, _TWENTY, partition=0)
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


def test_partitions_whose_committed_offsets_went_unread_are_assigned_again(
    tmp_path: Path,
) -> None:
    """librdkafka issue #5586: when the OffsetFetch of an assignment fails as a whole
    (``NOT_COORDINATOR``), it never fetches those partitions. On a fresh broker a new
    group's first OffsetFetch fails so (the offsets topic is still being made); the data
    feed recognises the report (``unstarted``) and assigns the partitions again."""
    with LocalKafka(free_port(), tmp_path / "kafka") as broker:
        settings = isolated_settings(broker.bootstrap, tmp_path, "u", tag=uuid.uuid4().hex[:8])
        asyncio.run(ensure_topics(settings))
        topic = settings.data_topic
        send_raw(settings, topic, _TWENTY, partition=0)
        config = {"group.id": settings.app_id, "auto.offset.reset": "earliest"}
        consumer = Consumer(rdkafka_config(settings, **config))
        consumer.assign([TopicPartition(topic, 0)])
        offsets: list[int | None] = []
        reassigned = 0
        deadline = time.monotonic() + 180
        try:
            while len(offsets) < 20:
                assert time.monotonic() < deadline, f"{len(offsets)} of 20 read ({reassigned})"
                messages = fetch(consumer, 20, 0.2, True)
                if unstarted(messages):
                    consumer.assign(consumer.assignment())  # as DataFeed._fetch does
                    reassigned += 1
                offsets += [m.offset() for m in messages if m.error() is None]
        finally:
            consumer.close()
        assert offsets == list(range(20))


def test_offsets_left_unreadable_after_a_replacement_are_settled_from_the_stable_ones(
    reader: tuple[Consumer, str], make_settings: Callable[..., Settings]
) -> None:
    """exactly_once: after its producer was replaced, a worker once found the group's
    committed offsets unreadable for minutes (every read waiting on a pending
    transactional commit) and never read on. Here another transactional id holds a
    commit pending; the rewind gives up after its tries, the stable offset is read
    without waiting, committed again in a transaction of the worker's id, and the
    consumer reads on from it."""
    consumer, topic = reader
    settings = make_settings(processing_guarantee="exactly_once")
    tp = TopicPartition(topic, 0)
    consumer.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
    batch = _take(consumer, 12)
    _, _, ends, firsts = records_of(batch)
    other = Producer(
        rdkafka_config(
            settings,
            **{"transactional.id": f"{settings.app_id}-x", "transaction.timeout.ms": 600_000},
        )
    )  # open for 10 min at most: the broker aborts it only after that, whatever the machine
    other.init_transactions(30)
    other.begin_transaction()
    other.send_offsets_to_transaction(
        [TopicPartition(topic, 0, 11)], consumer.consumer_group_metadata(), 30
    )  # left open: the group's offset of partition 0 is now "unstable"
    assert not rewind(consumer, ends, firsts, lambda: False, tries=2)

    publisher = Publisher(settings, transactional=True)
    publisher.start(30)
    txn = Transactions(publisher, Metrics(), _on_thread, lambda: False, lambda: None)
    txn.group = (settings.app_id, group_consumer_config(settings))

    async def settle() -> bool:
        # The feed passes the batch in flight and the one after it: partitions repeat.
        return await txn.settle(consumer, ends + ends, firsts + firsts, _on_thread)

    assert asyncio.run(settle())
    assert [m.offset() for m in _take(consumer, 15)] == list(range(5, 20))
    other.abort_transaction(30)  # its pending commit gone, the offset reads as settled
    assert consumer.committed([tp], timeout=30)[0].offset == 5
    publisher.close(5)


async def _on_thread(fn: Callable[..., object], *args: object) -> object:
    return await asyncio.to_thread(fn, *args)
