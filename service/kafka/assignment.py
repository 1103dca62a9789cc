"""The data consumer's subscription and its partitions, as the feed knows them.

Split from :mod:`service.kafka.data_feed` (which stays about one batch): what
the consumer subscribes to (the data topic, or every route's topic and
pattern), the rebalance callbacks, and the partitions the worker reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from service.core.settings import Settings
from service.kafka.batch import BatchState
from service.kafka.clients import group_consumer_config
from service.kafka.commits import DeliveredOffsets
from service.kafka.lag import Lag
from service.kafka.routing import Routing, lead_topic, subscriptions

__all__ = ["Assignment"]

logger = logging.getLogger(__name__)

#: Least seconds a data consumer may stay outside its group before it is replaced (a rejoin
#: takes a round trip or two once a coordinator answers; three session timeouts if longer).
OUTSIDE_FLOOR = 30.0


class Assignment:
    """Mixin of :class:`~service.kafka.data_feed.DataFeed`: subscription and partitions."""

    _settings: Settings
    _routing: Routing | None
    _assigned: set[tuple[str, int]]
    _idle: threading.Event
    _offsets: DeliveredOffsets
    _consumer: Consumer | None
    lag: Lag
    progress: BatchState
    #: Whether the broker answers this worker's other clients (the model feed's probe).
    broker_answers: Callable[[], bool] = staticmethod(lambda: True)
    _outside_since: float | None = None

    def assigned_partitions(self) -> int:
        return len(self._assigned)

    def partitions_by_topic(self) -> dict[str, list[int]]:
        """Every topic this worker reads (the data topic, or each route's) and its partitions."""
        held: dict[str, list[int]] = {}
        for topic, partition in sorted(self._assigned):
            held.setdefault(topic, []).append(partition)
        return held

    def partitions(self) -> list[int]:
        """The partitions this worker holds now of the data topic, or with routes of the
        first route's topic (partition 0's holder decides)."""
        routes = self._routing.routes if self._routing is not None else None
        lead = lead_topic(routes, self._settings.data_topic, self._assigned)
        return sorted(p for t, p in self._assigned if t == lead)

    def _make_consumer(self) -> Consumer:
        config = group_consumer_config(self._settings)
        routes = self._routing.routes if self._routing is not None else None
        if routes is not None:  # topics created later, or matching a pattern, found in 10 s
            config["topic.metadata.refresh.interval.ms"] = 10_000
        consumer = Consumer(config)
        consumer.subscribe(
            subscriptions(routes, self._settings.data_topic),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self.progress.group_refused = ""  # in the group (even with no partition to read)
        self.lag.forget(partitions)
        logger.info("data partitions assigned: %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Inside consume(), on the consumer's thread: the batch being delivered completes
        # before the partitions go, and the last batches' asynchronous commits are made sure of.
        if not self._idle.wait(self._settings.stop_timeout + self._settings.transaction_timeout):
            logger.warning("revoking partitions with a batch still being delivered")
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._offsets.revoke(consumer, revoked)
        self._assigned -= revoked
        logger.info("data partitions revoked: %s", sorted(tp.partition for tp in partitions))

    def _rejoin_if_outside(self, consumer: Consumer) -> None:
        """On the consumer's thread, after an empty fetch: a consumer outside its group (no
        member id, no partition) for long, while the broker answers the other clients, is
        replaced by a new one. Seen after a broker restart: librdkafka had dropped the
        broker it knew and never asked for a coordinator again, so the partitions it lost
        with its session were never assigned back, and the worker read nothing."""
        if self._assigned or consumer.memberid():
            self._outside_since = None
            return
        now = time.monotonic()
        limit = max(OUTSIDE_FLOOR, 3 * self._settings.session_timeout)
        if self._outside_since is None:
            self._outside_since = now
        elif now - self._outside_since > limit and self.broker_answers():
            logger.warning("the data consumer stayed outside its group %.0f s: a new one", limit)
            self._outside_since = None
            self._consumer = self._make_consumer()
            # It may wait for a coordinator it will never find: closed on a thread of its own.
            threading.Thread(target=consumer.close, daemon=True, name="kafka-close").start()
