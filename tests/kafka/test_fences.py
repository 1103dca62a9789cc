"""A fenced producer is replaced; only a fence after fence (a takeover) stops the worker.

The broker fences an exactly_once producer by itself, once per incident: a transaction it
timed out while the worker was frozen, an epoch bump after a network cut. Another instance
under the same transactional id fences it at every transaction. The first kind must not
stop the worker (seen: two workers of a group stopped after four 3-s network cuts); the
second must. The unit tests drive :class:`Transactions` with a publisher whose aborts
raise chosen errors; the last test fences a real producer on the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from scripts.harness import consume
from service.core.metrics import Metrics
from service.core.outputs import InputRecord, Scored
from service.core.settings import Settings
from service.kafka import transactions
from service.kafka.clients import ensure_topics, rdkafka_config
from service.kafka.delivery import Failure
from service.kafka.publisher import Publisher
from service.kafka.transactions import FENCES, Transactions

FENCED = KafkaError(
    KafkaError._FENCED, "Producer attempted an operation with an old epoch", fatal=True
)
REFUSED = KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "not authorized")


class _Fenced:
    """The publisher's transactional calls: each abort raises the next of ``errors``."""

    def __init__(self, *errors: KafkaError) -> None:
        self.errors = list(errors)
        self.calls: list[str] = []

    def abort(self, timeout: float) -> None:
        self.calls.append("abort")
        if self.errors:
            raise KafkaException(self.errors.pop(0))

    def replace(self, timeout: float) -> None:
        self.calls.append("replace")

    def begin(self) -> None:
        self.calls.append("begin")


def _transactions(publisher: Any, stops: list[str]) -> Transactions:
    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    return Transactions(
        cast(Publisher, publisher),
        Metrics(),
        call,
        lambda: bool(stops),
        lambda: stops.append("stop"),
    )


def test_one_fence_replaces_the_producer_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    publisher, stops = _Fenced(FENCED), list[str]()
    txn = _transactions(publisher, stops)
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(txn.restart())
    assert publisher.calls == ["abort", "replace", "begin"]
    assert stops == []
    assert txn.replaced
    assert "a new producer takes over its id" in caplog.text


def test_fence_after_fence_is_a_takeover_and_stops_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher, stops = _Fenced(*[FENCED] * FENCES), list[str]()
    txn = _transactions(publisher, stops)
    with caplog.at_level(logging.WARNING):
        for _ in range(FENCES - 1):  # each one replaced, the worker goes on
            assert asyncio.run(txn.restart())
        assert stops == []
        assert not asyncio.run(txn.restart())  # the next one, soon after: another holds the id
    assert stops == ["stop"]
    assert publisher.calls.count("replace") == FENCES - 1
    assert "another instance took over its id" in caplog.text


def test_fences_far_apart_never_stop_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(
        "service.kafka.transactions.time", SimpleNamespace(monotonic=lambda: clock[0])
    )
    publisher, stops = _Fenced(*[FENCED] * (3 * FENCES)), list[str]()
    txn = _transactions(publisher, stops)
    for _ in range(3 * FENCES):
        assert asyncio.run(txn.restart())
        clock[0] += transactions.FENCE_WINDOW / (FENCES - 1) + 0.01  # one incident after another
    assert stops == []
    assert publisher.calls.count("replace") == 3 * FENCES


def test_a_refused_transactional_id_stops_at_once() -> None:
    publisher, stops = _Fenced(REFUSED), list[str]()
    assert not asyncio.run(_transactions(publisher, stops).restart())
    assert stops == ["stop"]
    assert "replace" not in publisher.calls


def _failed(error: KafkaError) -> list[Failure]:
    source = InputRecord(b"k", b"{}", "records", 0, 0)
    return [Failure(Scored(b"k", b"{}", [], "m", "1", source), error)]


def test_a_fence_among_send_failures_replaces_and_counts_towards_a_takeover() -> None:
    """Every retry of a batch is a new producer; each fence it meets still counts."""
    publisher, stops = _Fenced(), list[str]()
    txn = _transactions(publisher, stops)
    for _ in range(FENCES - 1):
        assert asyncio.run(txn.again(_failed(FENCED), fresh=True))
    assert publisher.calls == ["replace", "begin"] * (FENCES - 1)
    assert not asyncio.run(txn.again(_failed(FENCED), fresh=True))
    assert stops == ["stop"]


def test_a_fatal_send_failure_replaces_the_producer_at_once() -> None:
    publisher, stops = _Fenced(), list[str]()
    fatal = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "skipped", fatal=True)
    assert asyncio.run(_transactions(publisher, stops).again(_failed(fatal), fresh=False))
    assert publisher.calls == ["replace", "begin"]  # no abort on a producer in a fatal state
    assert stops == []


# --- on the broker -----------------------------------------------------------------------


@pytest.mark.integration
def test_a_producer_fenced_on_the_broker_is_replaced_and_commits(
    make_settings: Callable[..., Settings],
) -> None:
    """A second producer's init_transactions under the worker's id fences it, as the broker's
    own timeout of a transaction does: the batch is aborted, the next one commits."""
    settings = make_settings(processing_guarantee="exactly_once")
    asyncio.run(ensure_topics(settings))
    publisher = Publisher(settings, transactional=True)
    publisher.start(10.0)
    stops: list[str] = []
    txn = _transactions(publisher, stops)
    group = Consumer(rdkafka_config(settings, **{"group.id": settings.app_id}))
    offsets = [TopicPartition(settings.data_topic, 0, 1)]

    def batch(n: int) -> None:
        source = InputRecord(b"k", b"{}", settings.data_topic, 0, 0)
        publisher.send([Scored(b"k", b'{"n": %d}' % n, [], "m", "1", source)])
        assert publisher.wait(10.0) == (0, [])

    try:
        publisher.begin()
        batch(0)
        _fence(settings, publisher)  # fences the worker's producer
        assert not asyncio.run(txn.commit(group.consumer_group_metadata(), offsets))
        assert stops == []  # replaced, not stopped
        publisher.begin()
        batch(1)
        assert asyncio.run(txn.commit(group.consumer_group_metadata(), offsets))

        # Fenced again, now while a batch is being sent: its wait answers every output
        # failed with the fence (it raised, and the data feed crashed), and it goes on.
        _fence(settings, publisher)
        publisher.begin()
        source = InputRecord(b"k", b"{}", settings.data_topic, 0, 0)
        publisher.send([Scored(b"k", b'{"n": 2}', [], "m", "1", source)])
        left, failures = publisher.wait(10.0)
        assert (left, [f.error.fatal() for f in failures]) == (0, [True])
        assert asyncio.run(txn.again(failures, fresh=False))
        batch(3)
        assert asyncio.run(txn.commit(group.consumer_group_metadata(), offsets))
        assert stops == []
        got = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 2)
        assert [r.json()["n"] for r in got] == [1, 3]  # the fenced attempts were aborted
    finally:
        group.close()
        publisher.close(5.0)


def _fence(settings: Settings, publisher: Publisher) -> None:
    """What another instance under the worker's transactional id does when it starts."""
    tid = str(publisher._config["transactional.id"])
    Producer(rdkafka_config(settings, **{"transactional.id": tid})).init_transactions(10.0)
