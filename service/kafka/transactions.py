"""exactly_once: commit a batch's transaction, or abort it and recover.

One transaction per batch holds the scored records, the dead letters and the
input offsets (sent with the consumer's group metadata, KIP-447, so a zombie
whose partitions moved on cannot commit). Any failure aborts it and the batch
is sent again. A producer in a fatal state is replaced under the same
transactional id (its epoch bump aborts what the old one left open), except
when another instance holds that id: then this one is the zombie, and stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from service.core.metrics import Metrics
from service.kafka.publisher import Publisher, fenced
from service.kafka.threads import bounded

__all__ = ["Transactions"]

logger = logging.getLogger(__name__)

Call = Callable[..., Awaitable[Any]]


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

    async def commit(self, generation: Any, offsets: list[TopicPartition]) -> bool:
        """Commit outputs and offsets together; False if aborted (the caller rewinds).

        ``generation`` is the consumer's group metadata from when the batch was read.
        """
        try:

            def commit() -> None:
                self._publisher.commit(offsets, generation, 10.0)

            # On a thread of its own: after a broker restart, librdkafka's
            # send_offsets_to_transaction was seen blocking far past its timeout.
            if await bounded(commit, 15.0):
                self._metrics.transactions.labels("committed").inc()
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
                    await self._call(self._publisher.abort, 5.0)
                    if begin:
                        await self._call(self._publisher.begin)
                    return True
                except KafkaException as exc:
                    error = exc.args[0]
                    if fenced(error):
                        logger.error("producer fenced (%s): another instance took over", error)
                        self._on_fenced()
                        return False
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
            await self._call(self._publisher.replace, 10.0)
            if begin:
                await self._call(self._publisher.begin)
            return True
        except KafkaException as exc:
            logger.warning("cannot replace the producer yet (%s)", exc)
            return False

    def abandon(self) -> None:
        """A stop ran out of time: abort what is open (on the producer's thread)."""
        try:
            self._publisher.abort(1.0)
        except KafkaException as exc:
            logger.debug("abort on stop: %s", exc)
