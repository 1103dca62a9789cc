"""exactly_once: commit a batch's transaction, or abort it and recover.

One transaction per batch holds the scored records, the dead letters and the
input offsets (sent with the consumer's group metadata, KIP-447, so a zombie
whose partitions moved on cannot commit). Any failure aborts it and the batch
is sent again. A producer in a fatal state is replaced under the same
transactional id (its epoch bump aborts what the old one left open). So is a
fenced one, unless it is fenced again and again: then another instance holds
that id, this one is the zombie, and it stops (see :data:`FENCES`).

After a replacement the group's committed offsets were once seen unreadable for
minutes (every read timed out, the broker holding them "unstable" for a
transaction that no longer existed), and the worker could not rewind. Then the
offsets are read without that wait (:func:`stable_offsets`: after the epoch bump
no transaction of this id is open, so the stable ones are the truth) and committed
again in a transaction of this id (:meth:`Transactions.settle`), whose commit
marker resolves what this id left pending, and the feed reads on from them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from service.core.metrics import Metrics
from service.kafka.batch import resume_points, seek_back
from service.kafka.clients import admin_client
from service.kafka.delivery import Failure, fenced
from service.kafka.publisher import Publisher
from service.kafka.threads import bounded

__all__ = ["Transactions", "stable_offsets"]

logger = logging.getLogger(__name__)

Call = Callable[..., Awaitable[Any]]
Offsets = list[TopicPartition]

#: Seconds each transactional call is given (librdkafka's own timeout) and then waited for
#: on a thread of its own before it counts as hung (after a broker restart, librdkafka's
#: calls were seen blocking far past their timeouts). A hung call never holds the
#: producer's thread: the producer is replaced and the batch read again.
TIMEOUT = 10.0
HUNG_AFTER = TIMEOUT + 5.0

#: A fence is not always a takeover. The broker fences this producer by itself, once per
#: incident: a transaction it timed out while the worker was frozen or cut off, an epoch
#: bump that librdkafka asked for after a cut (seen with four 3-s cuts: both workers of a
#: group stopped, though nobody else used their ids). Another instance under the same id
#: fences it at every transaction instead (each one's new producer bumps the other's
#: epoch). So a fence is answered with a new producer under the same id, and only FENCES
#: of them within FENCE_WINDOW seconds stop the worker. Safe either way: a commit also
#: carries the group generation its batch was read in (KIP-447), which a zombie's lacks.
FENCES = 4
FENCE_WINDOW = 10.0


class Transactions:
    """The transaction steps of the data feed, run on the producer's thread (``call``)."""

    def __init__(
        self,
        publisher: Publisher,
        metrics: Metrics,
        call: Call,
        gave_up: Callable[[], bool],
        on_fenced: Callable[[], None],
    ) -> None:
        self._publisher = publisher
        self._metrics = metrics
        self._call = call
        self._gave_up = gave_up
        self._on_fenced = on_fenced
        self.replaced = False  # a producer was replaced since the last commit
        self._fences: list[float] = []  # when this producer was fenced, within FENCE_WINDOW
        self.group: tuple[str, dict[str, Any]] = ("", {})  # the data consumer's id, config

    async def commit(self, generation: Any, offsets: list[TopicPartition]) -> bool:
        """Commit outputs and offsets together; False if aborted (the caller rewinds).

        ``generation`` is the consumer's group metadata from when the batch was read.
        """
        try:

            def commit() -> None:
                self._publisher.commit(offsets, generation, TIMEOUT)

            # On a thread of its own: after a broker restart, librdkafka's
            # send_offsets_to_transaction was seen blocking far past its timeout.
            if await bounded(commit, HUNG_AFTER):
                self._metrics.transactions.labels("committed").inc()
                self.replaced = False
                return True
            self._metrics.transactions.labels("aborted").inc()
            logger.warning("the transaction commit hangs")
            await self.restart(begin=False, fresh=True)
            return False
        except KafkaException as exc:
            self._metrics.transactions.labels("aborted").inc()
            logger.warning("transaction failed (%s); reading the batch again", exc.args[0])
            await self.restart(begin=False)
            return False

    async def again(self, failures: list[Failure], *, fresh: bool) -> bool:
        """After a failed send: :meth:`restart`, with a new producer if one failure is fatal.
        A fence among them counts towards a takeover (:data:`FENCES`) like any other."""
        fatal = next((f.error for f in failures if f.error.fatal()), None)
        if fatal is not None and fenced(fatal) and self._taken_over(fatal):
            return False
        return await self.restart(begin=True, fresh=fresh or fatal is not None)

    async def restart(self, *, begin: bool = True, fresh: bool = False) -> bool:
        """Abort the open transaction (replacing a producer in a fatal state), then begin.

        ``fresh`` replaces the producer outright: after a broker restart a producer
        can be left waiting for an epoch bump that a plain abort does not bring.
        False when the worker must stop instead: its transactional id was fenced by
        another instance (a zombie never writes again), or a stop ran out of time.
        """
        delay = 0.5
        failed = 0
        while not self._gave_up():
            if fresh and await self._replace(begin):
                return True
            if not fresh:
                try:
                    # On a thread of its own, as the commit: a hung abort must not hold the
                    # producer's thread (every later call queues behind it, silently).
                    if not await bounded(lambda: self._publisher.abort(TIMEOUT / 2), HUNG_AFTER):
                        logger.warning("the abort hangs; replacing the producer")
                        fresh = True
                        continue
                    if begin:
                        await self._call(self._publisher.begin)
                    return True
                except KafkaException as exc:
                    error = exc.args[0]
                    if fenced(error):
                        if self._taken_over(error):
                            return False
                        fresh = True
                        continue
                    failed += 1
                    # A producer in a fatal state is replaced; so is one whose abort keeps
                    # timing out (seen after a broker restart: its coordinator request stuck).
                    fresh = error.fatal() or failed >= 2
                    logger.warning("abort failed (%s)%s", error, "; replacing" if fresh else "")
            await asyncio.sleep(delay)
            delay = min(2 * delay, 5.0)
        return False

    async def _replace(self, begin: bool) -> bool:
        logger.warning("replacing the producer (same transactional id, next epoch)")
        try:
            # On a thread of its own: a resumed init_transactions was seen blocking far past
            # its timeout after a broker restart, which held the producer's thread for good.
            if not await bounded(lambda: self._publisher.replace(TIMEOUT), 2 * TIMEOUT):
                logger.warning("replacing the producer hangs; a new one will take its place")
                self._publisher.abandon_init()
                return False
            logger.warning("producer replaced")
            self.replaced = True
            if begin:
                await self._call(self._publisher.begin)
            return True
        except KafkaException as exc:
            logger.warning("cannot replace the producer yet (%s)", exc)
            return False

    async def settle(
        self,
        consumer: Consumer,
        ends: list[TopicPartition],
        firsts: list[TopicPartition],
        on_consumer: Call,
    ) -> bool:
        """Commit the group's stable offsets of ``ends`` again, by this id, and seek there.

        A marker of this producer id resolves any offset commit the replaced producer
        left pending; sending the same partitions' stable offsets first means that
        marker can commit nothing stale. False if it failed (the caller tries again).
        """
        group, config = self.group
        stable = await on_consumer(stable_offsets, config, group, ends, 5.0)
        if stable is None or self._gave_up():
            return False
        points = resume_points(stable, firsts)
        try:
            generation = consumer.consumer_group_metadata()

            def settle() -> None:
                self._publisher.settle(points, generation, TIMEOUT)

            # A transaction's commit, so bounded as one (see :meth:`commit`).
            if not await bounded(settle, HUNG_AFTER):
                logger.warning("settling the committed offsets hangs")
                await self.restart(begin=False, fresh=True)
                return False
        except KafkaException as exc:
            logger.warning("cannot settle the committed offsets yet (%s)", exc)
            if exc.args and fenced(exc.args[0]) and not self._taken_over(exc.args[0]):
                await self.restart(begin=False, fresh=True)
            return False
        self.replaced = False
        logger.warning("committed offsets settled again: %s", _show(points))
        await on_consumer(seek_back, consumer, points)
        return True

    def _taken_over(self, error: KafkaError) -> bool:
        """After a fence: True, and the worker stops, if another instance holds the id."""
        now = time.monotonic()
        self._fences = [t for t in self._fences if now - t < FENCE_WINDOW] + [now]
        if error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
            logger.error("producer refused (%s): the id's rights were taken away", error)
        elif len(self._fences) >= FENCES:
            logger.error(
                "producer fenced %d times in %.0f s (%s): another instance took over its id",
                len(self._fences),
                now - self._fences[0],
                error,
            )
        else:
            logger.warning("producer fenced (%s); a new producer takes over its id", error)
            return False
        self._on_fenced()
        return True

    def abandon(self) -> None:
        """A stop ran out of time: abort what is open (on the producer's thread)."""
        try:
            self._publisher.abort(1.0)
        except KafkaException as exc:
            logger.debug("abort on stop: %s", exc)


def stable_offsets(
    config: dict[str, Any], group: str, partitions: list[TopicPartition], timeout: float
) -> list[TopicPartition] | None:
    """The group's committed offsets of ``partitions`` as they stand, not waiting for
    pending transactional commits (``require_stable=False``); None if unreadable."""
    unique = dict.fromkeys((tp.topic, tp.partition) for tp in partitions)  # the admin refuses
    wanted = [TopicPartition(topic, partition) for topic, partition in unique]  # duplicates
    request = [ConsumerGroupTopicPartitions(group, wanted)]
    try:
        admin = admin_client(config)  # held until answered: a dropped client drops its futures
        future = admin.list_consumer_group_offsets(
            request, require_stable=False, request_timeout=timeout
        )[group]
        answer = future.result(timeout + 1.0).topic_partitions
    except Exception as exc:  # KafkaException, or the future's own timeout
        logger.warning("cannot read the stable committed offsets (%r)", exc)
        return None
    if answer is None or any(tp.error is not None for tp in answer):
        return None
    return list(answer)


def _show(offsets: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in offsets)
