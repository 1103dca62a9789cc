"""How far a worker is behind on its data partitions, for its heartbeats."""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = ["Lag"]

logger = logging.getLogger(__name__)

#: Seconds a feed may fetch nothing while records are unread before its log says so.
STILL_FOR = 30.0


class Lag:
    """Records of the assigned partitions the worker has not read yet (None: not known).

    Mostly local, so it costs no request to the broker: the positions and the high
    watermarks librdkafka's last fetches brought back (``cached=True``). A
    partition read nothing from since it was assigned has no position yet: it
    starts at the group's committed offset, asked of the broker once per
    assignment, so a worker handed partitions already read to their end reports
    0, not "not known". Until a fetch has answered for a partition it is left
    out. Read on the consumer's thread at most once a second; heartbeats report
    ``value``.
    """

    def __init__(self) -> None:
        self.value: int | None = None
        self.by_topic: dict[str, int] = {}  # the same, per topic read (with routes, per route)
        self._at = 0.0
        self._starts: dict[tuple[str, int], int] = {}  # committed, for partitions not read yet
        self._where: dict[tuple[str, int], int] = {}  # positions at the last refresh
        self._still_since = 0.0  # since when they have not moved with records unread
        self._said = False
        self._at_before = 0.0

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Newly assigned: where they start is asked again (another worker may have moved it)."""
        for tp in partitions:
            self._starts.pop((tp.topic, tp.partition), None)

    def refresh(self, consumer: Consumer, assigned: set[tuple[str, int]]) -> None:
        if time.monotonic() - self._at < 1.0:
            return
        self._at = time.monotonic()
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in sorted(assigned)])
        except KafkaException as exc:  # a figure for heartbeats: never worth failing a fetch
            logger.debug("no lag: %s", exc)
            self.value, self.by_topic = None, {}
            return
        known, total, unread = False, 0, {}
        by_topic: dict[str, int] = {}
        for tp in positions:
            try:
                low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high < 0:
                continue  # no fetch answered for it yet
            start = tp.offset if tp.offset >= 0 else self._starts.get((tp.topic, tp.partition))
            if start is None and low < high:
                unread[(tp.topic, tp.partition)] = (low, high)
                continue
            behind = _behind(low, high, start)
            known, total = True, total + behind
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + behind
        for key, start in self._committed(consumer, unread).items():
            self._starts[key] = start
            behind = _behind(*unread[key], start)
            known, total = True, total + behind
            by_topic[key[0]] = by_topic.get(key[0], 0) + behind
        self.value = total if known or not assigned else None
        self.by_topic = by_topic
        self._watch(positions)

    def _watch(self, positions: list[TopicPartition]) -> None:
        """Warn once when records stay unread and no position moves for ``STILL_FOR``: a
        consumer that fetches nothing while there is something to read (its partitions
        waiting on something inside the client) says so, not only its lag. The count is
        by the high watermark: an upstream transaction still open can also hold records
        back from a read_committed consumer until it ends."""
        now = time.monotonic()
        where = {(tp.topic, tp.partition): tp.offset for tp in positions}
        gap = now - self._at_before  # refreshes come with fetches: a long gap is no fetch
        self._at_before = now
        if not self.value or where != self._where or gap > 5.0:
            self._where, self._still_since, self._said = where, now, False
            return
        if not self._said and now - self._still_since > STILL_FOR:
            self._said = True
            shown = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(where.items()))
            logger.warning(
                "no record fetched for %.0f s while %d are unread (positions: %s); if this "
                "lasts, SIGUSR1 writes the worker's stacks to its log",
                now - self._still_since,
                self.value,
                shown,
            )

    @staticmethod
    def _committed(
        consumer: Consumer, unread: dict[tuple[str, int], tuple[int, int]]
    ) -> dict[tuple[str, int], int]:
        """The group's committed offset of each partition not read yet (negative: none)."""
        if not unread:
            return {}
        try:
            answers = consumer.committed([TopicPartition(t, p) for t, p in unread], timeout=0.5)
        except KafkaException as exc:  # asked again at the next refresh
            logger.debug("no committed offsets for the lag: %s", exc)
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in answers if tp.error is None}


def _behind(low: int, high: int, start: int | None) -> int:
    """Records from ``start`` to the high watermark, which a position read after that
    watermark may pass. Without a start (none known, none committed: negative), or one
    retention deleted, reading begins at the low watermark (``auto.offset.reset=earliest``)."""
    return max(0, high - (low if start is None else max(low, start)))
