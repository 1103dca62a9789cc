"""The labels feed: true labels joined to the predictions of the partitions this worker holds.

Labels and records are co-partitioned (same key, same partition count): the
worker that holds data partition ``p`` reads labels partition ``p``, by hand
(``assign``), following the data feed's assignment. Each partition's join
state (see :mod:`service.core.labels`) is rebuilt, when the partition is
assigned, by replaying its changelog (see :mod:`service.kafka.join_store`),
and every change is appended to it: the predictions of each scored batch,
the labels read with their offsets, and a snapshot of the totals each minute.
The labels consumer starts each partition at the offset the changelog says
comes next, so no label is joined twice, whichever the processing guarantee;
nothing is committed to a consumer group.

Why not Faust tables: the worker runs Faust with its Kafka client switched
off (see :mod:`service.worker`), so its tables and their changelogs are not
available; this is the same design (a changelog per partition, replayed on
assignment) with the labels offsets kept in the same log as the state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer
from confluent_kafka import TopicPartition as TP
from mode import Service

from service.core.join_log import labels_event, predictions_event, snapshot_event
from service.core.labels import PartitionJoin
from service.core.metrics import Metrics
from service.core.predictions import PredictionBlock
from service.core.quality import Sums
from service.core.quality_view import quality_report, update_quality_gauges
from service.core.settings import Settings
from service.kafka.join_store import (
    changelog_producer,
    create_join_topics,
    labels_consumer,
    restore_join,
)
from service.kafka.threads import wait_or_stop

__all__ = ["LabelsFeed"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_SNAPSHOT_EVERY = 60.0
_BUFFERED_BLOCKS = 1000  # predictions of a partition being restored, applied after it


class LabelsFeed(Service):
    """Reads the labels of this worker's data partitions and joins them to predictions."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        partitions: Callable[[], list[int]],
        after: asyncio.Event,
        on_pair: Callable[[str, dict[str, Sums]], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._metrics = metrics
        self._partitions = partitions
        self._after = after
        self._on_pair = on_pair
        self.joins: dict[int, PartitionJoin] = {}
        self._restoring: dict[int, list[PredictionBlock]] = {}
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labels")
        self._snapshots: dict[int, float] = {}
        self._count = settings.data_partitions  # partitions of the data topic, once known
        self.running = asyncio.Event()  # its clients are up

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _new_join(self, partition: int) -> PartitionJoin:
        s = self._settings
        return PartitionJoin(
            partition,
            window=s.label_window,
            quality_window=s.quality_window,
            max_bytes=max(1024, s.label_state_bytes // max(1, self._count)),
            on_pair=self._on_pair,
        )

    # --- the scorer's side: predictions -------------------------------------------------

    def record(self, partition: int, block: PredictionBlock) -> None:
        """The observer's sink, on the event loop: join, and append to the changelog."""
        join = self.joins.get(partition)
        if join is None:
            waiting = self._restoring.get(partition)
            if waiting is None:
                waiting = self._restoring.setdefault(partition, [])
            if len(waiting) < _BUFFERED_BLOCKS:
                waiting.append(block)
            return
        join.predicted(block, block.at)
        self._append(partition, predictions_event(block))

    def _append(self, partition: int, value: bytes) -> None:
        producer = self._producer
        if producer is None:
            return
        for _ in range(50):
            try:
                producer.produce(
                    self._settings.label_state_topic_name,
                    value,
                    partition=partition,
                    on_delivery=_delivered,
                )
                return
            except BufferError:
                producer.poll(0.05)
        logger.warning("join changelog queue full: an event of partition %d is lost", partition)

    # --- the labels' side ---------------------------------------------------------------

    @Service.task
    async def _run(self) -> None:
        await wait_or_stop(self._after.wait(), lambda: self.should_stop)
        delay = 0.5
        while not self.should_stop:
            try:
                self._count = await self._call(create_join_topics, self._settings)
                self._producer = changelog_producer(self._settings)
                self._consumer = await self._call(labels_consumer, self._settings)
                break
            except Exception as exc:
                logger.warning("labels feed cannot start (%s); retry in %.1fs", exc, delay)
                await self.sleep(delay)
                delay = min(2 * delay, 5.0)
        self.running.set()
        last_tick = 0.0
        while not self.should_stop:
            try:
                await self._follow_assignment()
                messages = await self._call(self._consume)
                self._apply(messages)
                if time.monotonic() - last_tick >= 1.0:
                    last_tick = time.monotonic()
                    self._tick()
            except Exception as exc:
                logger.exception("labels feed: %s", exc)
                await self.sleep(1.0)

    def _consume(self) -> list[Message]:
        consumer = self._consumer
        if consumer is None:  # closed by a stop meanwhile
            return []
        if not consumer.assignment():
            time.sleep(0.2)
            return []
        return list(consumer.consume(1000, 0.2))

    async def _follow_assignment(self) -> None:
        wanted = set(self._partitions())
        held = set(self.joins) | set(self._restoring)
        gone, new = held - wanted, wanted - set(self.joins)
        consumer = self._consumer
        if consumer is None:  # closed by a stop meanwhile
            return
        if gone:
            for p in gone:
                self.joins.pop(p, None)
                self._restoring.pop(p, None)
            topic = self._settings.labels_topic
            current = {tp.partition for tp in await self._call(consumer.assignment)}
            drop = [TP(topic, p) for p in gone if p in current]
            if drop:
                await self._call(consumer.incremental_unassign, drop)
            logger.info("label joins released: %s", sorted(gone))
        for p in sorted(new):
            self._restoring.setdefault(p, [])
            join = await self._call(restore_join, self._settings, p, self._new_join, self._stop)
            if p not in self._partitions() or self.should_stop:
                self._restoring.pop(p, None)
                continue
            for block in self._restoring.pop(p, []):
                join.predicted(block, block.at)
                self._append(p, predictions_event(block))
            self.joins[p] = join
            start = join.labels_next if join.labels_next >= 0 else OFFSET_BEGINNING
            await self._call(
                consumer.incremental_assign, [TP(self._settings.labels_topic, p, start)]
            )
            logger.info("labels partition %d joined from offset %s", p, start)

    def _stop(self) -> bool:
        return self.should_stop

    def _apply(self, messages: list[Message]) -> None:
        if not messages:
            return
        now = time.time()
        by_partition: dict[int, list[tuple[int, bytes | None, Any, Any]]] = {}
        nexts: dict[int, int] = {}
        for m in messages:
            partition, offset = m.partition(), m.offset()
            error = m.error()
            if error is not None or partition is None or offset is None:
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("labels consumer: %s", error)
                continue
            join = self.joins.get(partition)
            if join is None or offset < join.labels_next:
                continue
            nexts[partition] = offset + 1
            parsed = _parse_label(m.value())
            if parsed is None:
                self._metrics.labels.labels("invalid").inc()
                continue
            by_partition.setdefault(partition, []).append((offset, m.key(), *parsed))
        for partition, next_ in nexts.items():
            join = self.joins[partition]
            labels = by_partition.get(partition, [])
            for _, key, record_id, label in labels:
                join.labelled(key, record_id, label, now)
            join.labels_next = next_
            self._append(partition, labels_event(now, labels, next_))

    def _tick(self) -> None:
        now = time.time()
        for partition, join in list(self.joins.items()):
            join.expire(now)
            for outcome, n in join.drain_counts().items():
                if outcome.startswith("evicted_"):
                    self._metrics.join_evicted.labels(outcome[len("evicted_") :]).inc(n)
                elif outcome == "unlabelled":
                    self._metrics.predictions_unlabelled.inc(n)
                else:
                    self._metrics.labels.labels(outcome).inc(n)
            if join.book.changed and now - self._snapshots.get(partition, 0.0) >= _SNAPSHOT_EVERY:
                self._snapshots[partition] = now
                join.book.changed = False
                self._append(partition, snapshot_event(now, join))
        self._metrics.join_state_bytes.set(PartitionJoin.sizes(list(self.joins.values())))
        update_quality_gauges(self._metrics, [j.book for j in self.joins.values()], now)
        if self._producer is not None:
            self._producer.poll(0)

    # --- views --------------------------------------------------------------------------

    def quality(self, name: str) -> dict[str, Any]:
        """``GET /models/{name}/quality``, over the partitions held now."""
        return quality_report([j.book for j in self.joins.values()], name, time.time())

    async def on_stop(self) -> None:
        producer = self._producer
        if producer is not None:
            await asyncio.to_thread(producer.flush, 2.0)
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.get_running_loop().run_in_executor(self._thread, consumer.close)
        self._thread.shutdown(wait=False, cancel_futures=True)


def _delivered(error: KafkaError | None, message: Message) -> None:
    if error is not None:
        logger.warning("join changelog write failed (%s): a restart may miss it", error)


def _parse_label(value: bytes | None) -> tuple[Any, Any] | None:
    """``{"id": ..., "label": ...}`` -> (id, label); None when it is not that."""
    import orjson

    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or "label" not in doc:
        return None
    return doc.get("id"), doc["label"]
