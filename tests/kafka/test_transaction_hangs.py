"""A transactional call that hangs never holds the data feed (no broker: the recovery logic).

After a broker restart librdkafka's transactional calls were seen blocking far past
their own timeouts. Each one runs on a thread of its own with a bound; past it, the
producer is replaced (a new epoch aborts whatever the old one left open) and the
batch is read again. Here a publisher whose chosen calls never return stands in for
such a client: what is checked is that ``Transactions`` gives up on each one in
time, replaces the producer, and says so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from confluent_kafka import TopicPartition

from service.core.metrics import Metrics
from service.kafka import transactions
from service.kafka.batch import seek_back
from service.kafka.publisher import Publisher
from service.kafka.transactions import Transactions, stable_offsets


class _Hanging:
    """The publisher's transactional calls; those named in ``hang`` block until released."""

    def __init__(self, *hang: str) -> None:
        self.hang = set(hang)
        self.calls: list[str] = []
        self.released = threading.Event()

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.hang:
            self.released.wait(60)

    def commit(self, offsets: Any, generation: Any, timeout: float) -> None:
        self._call("commit")

    def settle(self, offsets: Any, generation: Any, timeout: float) -> None:
        self._call("settle")

    def abort(self, timeout: float) -> None:
        self._call("abort")

    def replace(self, timeout: float) -> None:
        self._call("replace")
        self.hang.discard("begin")

    def begin(self) -> None:
        self._call("begin")

    def abandon_init(self) -> None:
        self.calls.append("abandon_init")


class _Consumer:
    def consumer_group_metadata(self) -> object:
        return object()


@pytest.fixture(autouse=True)
def _short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    # A call that returns does so in microseconds; the bounds are what a hanging one costs
    # the test, generous enough that a loaded machine never takes a quick call for a hang.
    monkeypatch.setattr(transactions, "TIMEOUT", 1.0)
    monkeypatch.setattr(transactions, "HUNG_AFTER", 2.0)


@pytest.fixture
def hanging() -> Iterator[Callable[..., tuple[_Hanging, Transactions]]]:
    made: list[_Hanging] = []

    def make(*hang: str, gave_up: Callable[[], bool] = lambda: False) -> tuple[_Hanging, Any]:
        publisher = _Hanging(*hang)
        made.append(publisher)
        on_thread = _on_producer_thread(publisher)
        txn = Transactions(cast(Publisher, publisher), Metrics(), on_thread, gave_up, _no_fence)
        return publisher, txn

    yield make
    for publisher in made:
        publisher.released.set()


def _on_producer_thread(publisher: _Hanging) -> Callable[..., Any]:
    """The feed's producer thread: every call it runs is recorded with a mark."""

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        publisher.calls.append("on the producer thread:")
        return await asyncio.to_thread(fn, *args)

    return call


def _no_fence() -> None:
    raise AssertionError("not fenced")


def test_a_hung_commit_replaces_the_producer(
    hanging: Callable[..., tuple[_Hanging, Transactions]], caplog: pytest.LogCaptureFixture
) -> None:
    publisher, txn = hanging("commit")
    with caplog.at_level(logging.WARNING):
        assert not asyncio.run(txn.commit(object(), []))  # aborted: the batch is read again
    assert publisher.calls == ["commit", "replace"]
    assert txn.replaced
    assert "the transaction commit hangs" in caplog.text
    assert "producer replaced" in caplog.text


def test_a_hung_abort_replaces_the_producer_and_leaves_its_thread_free(
    hanging: Callable[..., tuple[_Hanging, Transactions]], caplog: pytest.LogCaptureFixture
) -> None:
    publisher, txn = hanging("abort")
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(txn.restart(begin=True))
    # The abort ran on a thread of its own; the producer's thread only began the next one.
    assert publisher.calls == ["abort", "replace", "on the producer thread:", "begin"]
    assert "the abort hangs" in caplog.text


def test_a_hung_settle_replaces_the_producer_and_does_not_seek(
    hanging: Callable[..., tuple[_Hanging, Transactions]], caplog: pytest.LogCaptureFixture
) -> None:
    publisher, txn = hanging("settle")
    txn.group = ("group", {})
    sought: list[object] = []
    stable = [TopicPartition("t", 0, 5)]

    async def on_consumer(fn: Callable[..., Any], *args: Any) -> Any:
        if fn is stable_offsets:
            return stable
        assert fn is seek_back
        sought.append(args)
        return None

    firsts = [TopicPartition("t", 0, 5)]
    with caplog.at_level(logging.WARNING):
        settled = asyncio.run(txn.settle(cast(Any, _Consumer()), stable, firsts, on_consumer))
    assert not settled  # the caller assigns the partitions again instead
    assert publisher.calls == ["settle", "replace"]
    assert sought == []
    assert "settling the committed offsets hangs" in caplog.text


def test_a_hung_replacement_is_abandoned_and_tried_again_until_a_stop(
    hanging: Callable[..., tuple[_Hanging, Transactions]], caplog: pytest.LogCaptureFixture
) -> None:
    tries: list[int] = []

    def gave_up() -> bool:  # a stop that ran out of time after two replacements
        tries.append(1)
        return len(tries) > 2

    publisher, txn = hanging("replace", gave_up=gave_up)
    with caplog.at_level(logging.WARNING):
        assert not asyncio.run(txn.restart(fresh=True))
    assert publisher.calls == ["replace", "abandon_init", "replace", "abandon_init"]
    assert caplog.text.count("replacing the producer hangs") == 2
