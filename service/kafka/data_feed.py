"""The data feed: records come off Kafka a batch at a time, not an event at a time.

Faust's stream machinery costs tens of microseconds per record (a task and a
queue hop per message, an ack per event), several times the cost of scoring
it. This service reads the data topic with one aiokafka consumer in the
``HOTSWAP_APP_ID`` group, hands each fetched batch to the Faust scoring agent
as a single event over an in-memory channel, waits until the agent has scored
it and the broker has acknowledged every output, and only then commits the
batch's offsets: at-least-once, one Faust event per batch.

Rebalances wait for the in-flight batch (the lock), so a revoked partition's
last batch is committed before another worker takes it over; a stop
(SIGTERM) finishes the batch, commits and leaves the group, so a restart
re-scores nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from mode import Service

from service.core.scoring import InputRecord
from service.core.settings import Settings
from service.kafka.clients import consumer as make_consumer
from service.kafka.model_feed import ModelFeed

__all__ = ["Batch", "DataFeed"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Batch:
    """Records for the agent, and the future it resolves once they are safely out."""

    records: list[InputRecord]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    taken: bool = False  # set by the agent; a second delivery of the same batch is ignored


class _WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._lock:  # the in-flight batch finishes and commits first
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        logger.info("data partitions assigned: %s", sorted(tp.partition for tp in assigned))


class DataFeed(Service):
    """Fetches batches of data records and feeds them to the scoring agent."""

    def __init__(
        self,
        settings: Settings,
        models: ModelFeed,
        channel: Any,
        agent_listening: asyncio.Event,
        flow_active: Callable[[], bool],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._flow_active = flow_active
        self._agent_listening = agent_listening
        self._settings = settings
        self._models = models
        self._channel = channel
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._finished = asyncio.Event()

    def assigned_partitions(self) -> int:
        return len(self._consumer.assignment()) if self._consumer is not None else 0

    @Service.task
    async def _run(self) -> None:
        try:
            if not self._models.replayed.is_set():
                logger.info("scoring waits for the model topic to be replayed")
                await self._models.replayed.wait()
            await self._agent_listening.wait()
            # Everything built at start-up lives until exit: move it out of the collector's
            # reach, so full collections stop walking it (measured: ~120 ms of GC per 50k
            # records down to ~1 ms, ~8 % more throughput).
            gc.collect()
            gc.freeze()
            if not self.should_stop:
                await self._consume()
        finally:
            self._finished.set()

    async def _consume(self) -> None:
        settings = self._settings
        consumer = make_consumer(
            settings,
            group_id=settings.app_id,
            max_poll_records=settings.batch_size,
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout / 3) * 1000),
        )
        consumer.subscribe([settings.data_topic], listener=_WaitForBatch(self._lock))
        self._consumer = consumer
        await consumer.start()
        try:
            while not self.should_stop:
                fetched = await consumer.getmany(
                    timeout_ms=int(settings.batch_timeout * 1000), max_records=settings.batch_size
                )
                if fetched:
                    async with self._lock:
                        await self._process(consumer, fetched)
        finally:
            await self._leave(consumer)

    async def _process(
        self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, Any]
    ) -> None:
        assigned = consumer.assignment()
        fetched = {tp: messages for tp, messages in fetched.items() if tp in assigned}
        records = [
            InputRecord(m.key, m.value, tp.topic, tp.partition, m.offset, m.timestamp / 1000)
            for tp, messages in fetched.items()
            for m in messages
        ]
        if not records:
            return
        batch = Batch(records)
        try:
            await self._hand_over(batch)
        except Exception as exc:  # the agent could not finish: read the batch again
            logger.error("batch of %d failed (%s); it will be read again", len(records), exc)
            for tp, messages in fetched.items():
                consumer.seek(tp, messages[0].offset)
            await asyncio.sleep(1.0)
            return
        offsets = {tp: messages[-1].offset + 1 for tp, messages in fetched.items()}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The partitions moved on (rebalance): their new owner re-reads from the last
            # commit, which makes duplicates, never a loss.
            logger.warning("commit of a scored batch failed (%s); expect duplicates", exc)

    async def _hand_over(self, batch: Batch) -> None:
        """Send ``batch`` to the agent and wait until it is done.

        Faust empties its channel queues when its flow control resumes after a
        rebalance of the app's own group; a batch dropped that way (never taken
        by the agent) is sent again.
        """
        while not self._flow_active():  # noqa: ASYNC110 (Faust exposes a predicate, no event)
            await asyncio.sleep(0.05)
        await self._channel.send(value=batch)
        while True:
            done, _ = await asyncio.wait({batch.done}, timeout=0.5)
            if done:
                batch.done.result()
                return
            if not batch.taken and self._flow_active():
                logger.info("a batch was dropped by Faust's flow control; sending it again")
                await self._channel.send(value=batch)

    async def _leave(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await consumer.stop()  # leaves the group at once: the partitions move now
        except Exception as exc:
            logger.debug("stopping the data consumer: %s", exc)
        self._consumer = None

    async def on_stop(self) -> None:
        """Let the in-flight batch finish and commit before the task is cancelled."""
        try:
            await asyncio.wait_for(self._finished.wait(), timeout=30)
        except TimeoutError:
            logger.warning("the in-flight batch did not finish within 30 s")
