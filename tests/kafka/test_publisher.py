"""The publisher against the real broker: every output lands once, in order, even when
librdkafka's local queue fills up mid-batch (``BufferError``) and outputs of every kind
(scored, keyless, shadow, dead letter) are mixed in one batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from scripts.harness import ConsumedRecord, consume, send_raw
from scripts.localkafka import free_port
from service.core.messages import HEADER_SOURCE_OFFSET
from service.core.outputs import DeadLetter, InputRecord, Scored
from service.core.settings import Settings
from service.kafka.clients import ensure_topics, rdkafka_config
from service.kafka.delivery import Output
from service.kafka.publisher import Publisher, flush_promptly

pytestmark = pytest.mark.integration


def _outputs(settings: Settings, n: int) -> list[Output]:
    outputs: list[Output] = []
    for i in range(n):
        source = InputRecord(f"k{i % 37}".encode(), b"{}", settings.data_topic, i % 3, i)
        headers = [(HEADER_SOURCE_OFFSET, b"%d" % i)]
        value = f'{{"n": {i}}}'.encode()
        if i % 50 == 7:
            outputs.append(DeadLetter(source.key, source.value, headers, "r", "d", source))
        elif i % 50 == 11:
            outputs.append(Scored(None, value, headers, "m", "1", source))  # keyless
        elif i % 50 == 13:
            outputs.append(Scored(source.key, value, headers, "m", "2", source, shadow=True))
        else:
            outputs.append(Scored(source.key, value, headers, "m", "1", source))
    return outputs


def _offsets(records: list[ConsumedRecord]) -> list[int]:
    return [int(r.headers[HEADER_SOURCE_OFFSET]) for r in records]


def test_a_full_local_queue_loses_reorders_and_doubles_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    publisher = Publisher(settings, transactional=False, queue_limit=50)
    publisher.start(10.0)
    outputs = _outputs(settings, 3000)
    publisher.begin()
    publisher.send(outputs)  # 3000 outputs through a queue of 50: BufferError many times
    left, failures = publisher.wait(30.0)
    assert (left, failures) == (0, [])

    expected: dict[str, list[int]] = defaultdict(list)
    for out in outputs:
        if isinstance(out, DeadLetter):
            expected[settings.dead_letter_topic].append(out.source.offset)
        elif out.shadow:
            expected[settings.shadow_topic].append(out.source.offset)
        else:
            expected[settings.scored_topic].append(out.source.offset)
    for topic, offsets in expected.items():
        want = len(offsets)
        got = consume(settings, topic, until=lambda rs: len(rs) >= want)  # noqa: B023
        assert sorted(_offsets(got)) == offsets, topic  # each exactly once
        by_partition: dict[int, list[int]] = defaultdict(list)
        for record in got:
            by_partition[record.partition].append(int(record.headers[HEADER_SOURCE_OFFSET]))
        for partition, seen in by_partition.items():
            assert seen == sorted(seen), f"{topic}[{partition}] out of order"
    publisher.close(5.0)


class _AnsweredLate:
    """A real producer whose ``send_offsets_to_transaction`` answers after the feed moved on.

    The offsets land, but by the time the call returns the feed has given up on it
    (its bound ran out), replaced the producer and begun sending the next attempt:
    what a commit hanging through a broker restart looks like.
    """

    def __init__(self, real: Any, moved_on: Callable[[], None]) -> None:
        self._real, self._moved_on = real, moved_on

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self._real.send_offsets_to_transaction(*args)
        self._moved_on()


def test_a_prompt_flush_returns_once_every_record_is_answered_and_never_before(
    make_settings: Callable[..., Settings],
) -> None:
    """``flush_promptly`` waits in short steps: it must still wait for every answer,
    including records produced with a linger far longer than its steps, and count what
    is left when nothing answers, only once its time is up."""
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    options = {"acks": "all", "delivery.report.only.error": True, "linger.ms": 10_000}
    producer = Producer(rdkafka_config(settings, **options))
    for i in range(500):
        producer.produce(settings.scored_topic, b"%d" % i, b"k%d" % (i % 7))
    assert flush_promptly(producer, 120.0) == 0
    assert len(producer) == 0
    got = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 500)
    assert sorted(int(r.value or b"") for r in got) == list(range(500))

    nobody = Producer({"bootstrap.servers": f"127.0.0.1:{free_port()}", "log_level": 0,
                       "delivery.report.only.error": True})  # fmt: skip
    for i in range(5):
        nobody.produce("t", b"%d" % i)
    started = time.monotonic()
    assert flush_promptly(nobody, 1.5) == 5  # unanswered: counted, not dropped
    assert time.monotonic() - started >= 1.5  # and not given up before its time
    nobody.purge()


def test_a_commit_that_answers_late_never_commits_the_next_attempt(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(processing_guarantee="exactly_once")
    asyncio.run(ensure_topics(settings))
    publisher = Publisher(settings, transactional=True)
    publisher.start(10.0)

    def output(n: int) -> Output:
        source = InputRecord(b"k", b"{}", settings.data_topic, 0, n)
        return Scored(b"k", b'{"n": %d}' % n, [], "m", "1", source)

    def next_attempt() -> None:
        publisher.replace(10.0)  # fences the producer of the late commit
        publisher.begin()
        publisher.send([output(1)])  # part of the batch, sent again
        assert publisher.wait(10.0) == (0, [])

    publisher.begin()
    publisher.send([output(0)])
    assert publisher.wait(10.0) == (0, [])
    publisher._producer = _AnsweredLate(publisher._producer, next_attempt)  # type: ignore[assignment]
    group = Consumer(rdkafka_config(settings, **{"group.id": settings.app_id}))
    offsets = [TopicPartition(settings.data_topic, 0, 1)]
    with pytest.raises(KafkaException):  # its commit_transaction is on the fenced producer
        publisher.commit(offsets, group.consumer_group_metadata(), 10.0)

    # The next attempt's transaction is still open: it finishes the batch and commits it.
    publisher.send([output(2)])
    assert publisher.wait(10.0) == (0, [])
    publisher.commit(offsets, group.consumer_group_metadata(), 10.0)
    got = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 2)
    assert sorted(r.json()["n"] for r in got) == [1, 2]  # the first attempt's 0 was aborted
    group.close()
    publisher.close(5.0)


def test_a_batch_read_before_a_rebalance_cannot_commit_after_it(
    make_settings: Callable[..., Settings],
) -> None:
    """The data feed commits a batch with the group generation it was read in (KIP-447):
    once a rebalance has moved on, the broker refuses that commit, where the generation
    current at commit time would be accepted and double the batch its new owner reads."""
    settings = make_settings(processing_guarantee="exactly_once")
    asyncio.run(ensure_topics(settings))
    topic = settings.data_topic
    config = rdkafka_config(
        settings,
        **{"group.id": settings.app_id, "auto.offset.reset": "earliest"},
        **{"enable.auto.commit": False, "isolation.level": "read_committed"},
    )
    send_raw(settings, topic, [(b"k", b"v")])
    first, second = Consumer(config), Consumer(config)
    publisher = Publisher(settings, transactional=True)
    try:
        first.subscribe([topic])
        read = _consume_until(lambda: first.consume(10, 0.2), lambda got: bool(got))
        read_in = first.consumer_group_metadata()  # what DataFeed._fetch keeps with the batch
        offsets = [TopicPartition(topic, m.partition() or 0, (m.offset() or 0) + 1) for m in read]

        second.subscribe([topic])  # a rebalance: a new generation
        _consume_until(
            lambda: first.consume(10, 0.1) + second.consume(10, 0.1),
            lambda _: (
                bool(second.assignment()) and len(first.assignment()) < settings.data_partitions
            ),
        )
        publisher.start(10.0)

        def attempt(generation: Any) -> None:
            publisher.begin()
            publisher.send([Scored(b"k", b"{}", [], "m", "1", InputRecord(b"k", b"{}", topic))])
            assert publisher.wait(10.0) == (0, [])
            publisher.commit(offsets, generation, 10.0)

        with pytest.raises(KafkaException):
            attempt(read_in)
        publisher.abort(10.0)
        attempt(first.consumer_group_metadata())  # the old choice: accepted
    finally:
        first.close()
        second.close()
        publisher.close(5.0)


def _consume_until(
    consume: Callable[[], list[Any]], done: Callable[[list[Any]], bool]
) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + 180
    while not done(got):
        assert time.monotonic() < deadline, "the group did not settle within 180 s"
        got += [m for m in consume() if m.error() is None]
    return got
