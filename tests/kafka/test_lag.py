"""The lag a worker reports in its heartbeats, read from librdkafka's local state."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition

from scripts.harness import send_raw
from service.core.settings import Settings
from service.kafka import lag as lag_module
from service.kafka.clients import ensure_topics
from service.kafka.lag import Lag, _behind

pytestmark = pytest.mark.integration


def _fresh(consumer: Consumer, assigned: set[tuple[str, int]]) -> int | None:
    lag = Lag()
    lag.refresh(consumer, assigned)
    return lag.value


def _consumer(settings: Settings) -> Consumer:
    """A consumer of the settings' group that commits nothing by itself."""
    return Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers[0],
            "group.id": settings.app_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )


def test_lag_counts_what_is_not_read_yet(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    topic = settings.data_topic
    send_raw(settings, topic, [(b"one-key", b"v%d" % i) for i in range(100)])  # one partition
    consumer = _consumer(settings)
    try:
        assigned = {(topic, p) for p in range(settings.data_partitions)}
        consumer.assign([TopicPartition(t, p, 0) for t, p in assigned])
        assert _fresh(consumer, assigned) is None  # nothing fetched yet: not known, not 0

        taken = 0
        while taken < 30:
            taken += len(consumer.consume(30 - taken, 5.0))
        deadline = time.monotonic() + 120  # a bound for the broker's answers, not a budget
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


def test_partitions_not_read_from_yet_start_at_the_committed_offset(
    make_settings: Callable[..., Settings],
) -> None:
    """A worker handed partitions has no position in them until it reads a record: where
    the group's committed offset is (or the start, without one) is its lag, so a worker given
    partitions already read to their end says 0, not "not known"."""
    settings = make_settings(data_partitions=3)
    asyncio.run(ensure_topics(settings))
    topic = settings.data_topic
    send_raw(settings, topic, [(b"k", b"v%d" % i) for i in range(40)], partition=0)
    send_raw(settings, topic, [(b"k", b"w%d" % i) for i in range(10)], partition=1)
    send_raw(settings, topic, [(b"k", b"x%d" % i) for i in range(7)], partition=2)
    config = {
        "bootstrap.servers": settings.bootstrap_servers[0],
        "group.id": settings.app_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    committer = Consumer(config)
    try:  # the group read partition 0 to its end, partition 1 up to 4 of 10, never 2
        done = [TopicPartition(topic, 0, 40), TopicPartition(topic, 1, 4)]
        committer.commit(offsets=done, asynchronous=False)
    finally:
        committer.close()
    consumer = Consumer(config)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])  # from the committed offsets
        assigned = {(topic, p) for p in range(3)}
        deadline = time.monotonic() + 120  # a bound for the broker's answers, not a budget
        while _fresh(consumer, assigned) != 0 + 6 + 7:  # never consumed: no position anywhere
            assert time.monotonic() < deadline, _fresh(consumer, assigned)
            time.sleep(0.05)
        lag = Lag()
        lag.refresh(consumer, assigned)
        assert lag.value == 13
        consumer.assign([TopicPartition(topic, 0)])  # partition 0 alone: read to its end
        caught_up = {(topic, 0)}
        while _fresh(consumer, caught_up) != 0:
            assert time.monotonic() < deadline, _fresh(consumer, caught_up)
            time.sleep(0.05)
    finally:
        consumer.close()


def test_behind_counts_from_what_can_still_be_read() -> None:
    assert _behind(3, 9, None) == 6  # no start known: from the start
    assert _behind(3, 9, -1001) == 6  # the broker says none is committed
    assert _behind(10, 20, 5) == 10  # retention deleted past the committed offset
    assert _behind(0, 20, 25) == 0  # a position past a watermark read earlier
    assert _behind(0, 20, 12) == 8


def test_lag_is_also_kept_per_topic(make_settings: Callable[..., Settings]) -> None:
    """With routes a worker reads several topics: heartbeats and the gauge say which lags."""
    settings = make_settings(data_partitions=2)
    asyncio.run(ensure_topics(settings))
    first, second = settings.data_topic, settings.scored_topic  # any two topics of the group
    send_raw(settings, first, [(b"k", b"v%d" % i) for i in range(20)], partition=0)
    send_raw(settings, second, [(b"k", b"w%d" % i) for i in range(5)], partition=1)
    consumer = _consumer(settings)
    try:
        assigned = {(t, p) for t in (first, second) for p in range(2)}
        consumer.assign([TopicPartition(t, p) for t, p in assigned])
        lag = Lag()
        deadline = time.monotonic() + 120  # a bound for the broker's answers, not a budget
        while lag.by_topic != {first: 20, second: 5}:
            assert time.monotonic() < deadline, lag.by_topic
            time.sleep(0.05)
            lag = Lag()
            lag.refresh(consumer, assigned)
        assert lag.value == 25
    finally:
        consumer.close()


def test_a_consumer_that_fetches_nothing_while_records_are_unread_is_named_once(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker's partitions can sit unfetched inside librdkafka (waiting on a committed
    offset, a coordinator): the lag is then the only sign. Its log says so once, with the
    positions; reading on clears it. Here the partition is paused after 10 of 100 records."""
    monkeypatch.setattr(lag_module, "STILL_FOR", 0.5)
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    topic = settings.data_topic
    send_raw(settings, topic, [(b"k", b"v%d" % i) for i in range(100)], partition=0)
    consumer = _consumer(settings)
    tp = TopicPartition(topic, 0)
    lag = Lag()

    def refresh() -> int | None:
        lag._at = 0.0  # the once-a-second bound is not under test
        lag.refresh(consumer, {(topic, 0)})
        return lag.value

    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 120  # a bound for the broker's answers, not a budget
        taken = 0
        while taken < 10:
            assert time.monotonic() < deadline, taken
            taken += len(consumer.consume(10 - taken, 5.0))
        consumer.pause([tp])
        with caplog.at_level(logging.WARNING, logger="service.kafka.lag"):
            while "no record fetched" not in caplog.text:
                assert time.monotonic() < deadline, (refresh(), caplog.text)
                refresh()
                time.sleep(0.1)
            for _ in range(10):  # once, not at every refresh
                refresh()
                time.sleep(0.1)
            assert caplog.text.count("no record fetched") == 1
            assert "90 are unread" in caplog.text
            assert f"{topic}[0]@10" in caplog.text

            consumer.resume([tp])
            while taken < 100:
                assert time.monotonic() < deadline, taken
                taken += len(consumer.consume(100 - taken, 5.0))
            while refresh() != 0:  # read to the end
                assert time.monotonic() < deadline, lag.value
                time.sleep(0.1)
            caplog.clear()
            for _ in range(10):  # nothing unread: nothing said, however still
                refresh()
                time.sleep(0.1)
            assert "no record fetched" not in caplog.text
    finally:
        consumer.close()
