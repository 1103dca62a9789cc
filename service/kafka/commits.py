"""at_least_once commits: what was delivered, committed without a round trip per batch.

A batch's offsets may be committed once the broker acknowledged all of its
outputs. While streaming that commit is asynchronous: a commit that fails
(a rebalance, the coordinator moving) only makes the batch be scored again, a
duplicate and never a loss, and no batch waits a round trip for it. Before
partitions are revoked, and on a stop, what was delivered is committed
synchronously, so a rebalance or a graceful restart re-scores nothing.

The asynchronous commit is issued on the consumer's own thread, before its next
fetch (:meth:`DeliveredOffsets.commit_pending`), never from the event loop:
confluent-kafka's ``commit(asynchronous=True)`` keeps the GIL while it waits for
the consumer, which another thread may be polling for up to the batch timeout, so
from the event loop it stalled the whole worker (measured: most stalls over 12 ms
at 2,000 records/s were there), and could deadlock it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from service.kafka.threads import bounded

__all__ = ["DeliveredOffsets"]

logger = logging.getLogger(__name__)


class DeliveredOffsets:
    """The next offset to read per partition, for every batch whose outputs are delivered."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._pending: dict[tuple[str, int], int] = {}  # delivered, not yet committed
        self._lock = threading.Lock()  # _pending: written on the loop, taken on the consumer's

    def delivered(self, offsets: Iterable[TopicPartition], *, commit: bool = False) -> None:
        """Note a delivered batch; ``commit``: also have the consumer's thread commit it."""
        with self._lock:
            for tp in offsets:
                key = (tp.topic, tp.partition)
                self._next[key] = tp.offset
                if commit:
                    self._pending[key] = tp.offset

    def commit_pending(self, consumer: Consumer) -> None:
        """On the consumer's thread: commit what was delivered since the last call, async."""
        if not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        offsets = [TopicPartition(t, p, o) for (t, p), o in pending.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            logger.warning("commit of a delivered batch failed (%s); expect duplicates", exc)

    def revoke(self, consumer: Consumer, revoked: set[tuple[str, int]]) -> None:
        """Inside a rebalance callback (the consumer's thread): commit, then forget."""
        with self._lock:
            for key in revoked:
                self._pending.pop(key, None)  # committed just below, synchronously
            done = [
                TopicPartition(t, p, o) for (t, p), o in self._next.items() if (t, p) in revoked
            ]
        if done:
            try:
                consumer.commit(offsets=done, asynchronous=False)
            except KafkaException as exc:
                logger.warning("commit on revocation failed (%s); expect duplicates", exc)
        with self._lock:
            for key in revoked:
                self._next.pop(key, None)

    async def commit_sync(self, consumer: Consumer, limit: float) -> None:
        """Commit what was delivered, on a thread of its own, for at most ``limit`` seconds.

        librdkafka's synchronous commit has no timeout and waits for a coordinator
        that may be gone; a commit still pending when the wait ends may land later
        or not (then the batch is scored again: a duplicate, never a loss).
        """
        with self._lock:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._next.items()]
        if not offsets:
            return

        def commit() -> None:
            consumer.commit(offsets=offsets, asynchronous=False)

        limit = max(0.1, limit)
        try:
            if not await bounded(commit, limit):
                logger.warning("offset commit unanswered for %.1fs; expect duplicates", limit)
        except KafkaException as exc:
            logger.warning("commit of a delivered batch failed (%s); expect duplicates", exc)
