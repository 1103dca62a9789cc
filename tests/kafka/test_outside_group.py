"""A data consumer left outside its group is replaced, and only then (no broker needed).

After a broker restart a group consumer was seen to lose its session and never rejoin
(librdkafka found no broker to ask for a coordinator), so the worker read nothing. A
consumer that cannot reach any broker looks the same from inside: no member id, no
partitions. Here that is a consumer of a port nothing listens on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer

from service.core.settings import Settings
from service.kafka import assignment
from service.kafka.assignment import Assignment
from service.kafka.commits import DeliveredOffsets
from service.kafka.lag import Lag


class Feed(Assignment):
    """The data feed's subscription and partitions, without the rest of the feed."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._routing = None
        self._assigned = set()
        self._idle = threading.Event()
        self._idle.set()
        self._offsets = DeliveredOffsets()
        self.lag = Lag()
        self._consumer = self._make_consumer()
        self.made: list[Consumer] = [self._consumer]

    def _make_consumer(self) -> Consumer:
        consumer = super()._make_consumer()
        if hasattr(self, "made"):
            self.made.append(consumer)
        return consumer


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Feed]:
    monkeypatch.setattr(assignment, "OUTSIDE_FLOOR", 0.2)
    settings = Settings(broker="kafka://127.0.0.1:9", session_timeout=0.05, app_id="outside")
    feed = Feed(settings)
    yield feed
    for consumer in feed.made:
        with contextlib.suppress(RuntimeError):  # closed already
            consumer.close()


def _check_for(feed: Feed, seconds: float) -> None:
    """Poll and check, as the feed does after an empty fetch, until the consumer is replaced
    or ``seconds`` have passed; at least 10 checks, however slow the machine (so a test that
    expects no replacement has checked well past the 0.2-s floor)."""
    consumer = feed._consumer
    assert consumer is not None
    start = time.monotonic()
    checks = 0
    while feed._consumer is consumer and (checks < 10 or time.monotonic() - start < seconds):
        consumer.poll(0.05)
        feed._rejoin_if_outside(consumer)
        checks += 1


def test_a_consumer_outside_its_group_is_replaced_when_the_broker_answers_others(
    feed: Feed,
) -> None:
    first = feed.made[0]
    _check_for(feed, 60.0)  # bounded; ends as soon as it is replaced
    assert feed._consumer is not first
    assert len(feed.made) == 2
    assert _closed_within(first, 60.0)  # on a thread of its own


def _closed_within(consumer: Consumer, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            consumer.memberid()
        except RuntimeError:  # "Consumer closed"
            return True
        time.sleep(0.05)
    return False


def test_it_is_kept_while_the_broker_answers_no_client(feed: Feed) -> None:
    feed.broker_answers = lambda: False  # the broker is down for everyone: nothing to fix
    first = feed._consumer
    _check_for(feed, 1.0)
    assert feed._consumer is first
    assert len(feed.made) == 1


def test_it_is_kept_while_it_holds_partitions(feed: Feed) -> None:
    feed._assigned = {("records", 0)}
    first = feed._consumer
    _check_for(feed, 1.0)
    assert feed._consumer is first
    assert len(feed.made) == 1
