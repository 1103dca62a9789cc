"""The data feed's side of routes: decode before scoring, write enriched outputs after,
and hold back a route whose derived schema the registry refuses.

Both registry-touching steps run on the feed's consumer thread. A registry that
is away raises :class:`~service.core.errors.RegistryUnavailable`: the feed reads
the batch again after a backoff (nothing is dead-lettered) and ``/ready`` says so
once the batch stalls. A refused derived schema concerns one output topic: the
partitions of the topics routed there are rewound to the batch's first offsets
and paused for :data:`HOLD_SECONDS`, then tried again, while the other routes go
on; ``/ready`` names the route and the registry's answer meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaException, TopicPartition

from service.core.outputs import InputRecord, Scored
from service.core.routes import Routes
from service.kafka.delivery import Output

if TYPE_CHECKING:  # the registry client and codecs load with the first worker that has routes
    from service.kafka.schemas import SchemaCodec

__all__ = ["HOLD_SECONDS", "Routing", "lead_topic", "subscriptions"]

logger = logging.getLogger(__name__)

HOLD_SECONDS = 10.0
Offsets = list[TopicPartition]


class Routing:
    """Decoding, enriched outputs and held routes, for a worker with routes."""

    def __init__(self, routes: Routes, codec: SchemaCodec) -> None:
        from service.kafka.derived import EnrichWriter

        self.routes = routes
        self.codec = codec
        self.writer = EnrichWriter(codec)
        self.refused: dict[str, str] = {}  # output topic -> the registry's answer
        self._held: list[tuple[float, Offsets]] = []  # (when to resume, partitions)

    def decode(self, records: Sequence[InputRecord]) -> None:
        self.codec.decode(records)

    def encode(self, outputs: list[Output]) -> dict[str, str]:
        refused = self.writer.encode(outputs)
        written = {o.topic for o in outputs if type(o) is Scored and o.enrich}
        for topic in written - set(refused):
            if self.refused.pop(topic, None) is not None:
                logger.info("the derived schema of %s is accepted now: route resumed", topic)
        for topic, why in refused.items():
            if topic not in self.refused:
                logger.error("route to %s stalled: %s", topic, why)
            self.refused[topic] = why
        return refused

    def write(
        self, consumer: Consumer, outputs: list[Output], offsets: Offsets, firsts: Offsets
    ) -> tuple[list[Output], Offsets, Offsets]:
        """Enriched outputs in their input's format; the partitions of a route whose
        derived schema is refused are rewound and paused (on the consumer's thread)."""
        refused = self.encode(outputs)
        if not refused:
            return outputs, offsets, firsts
        outputs, offsets, firsts, held = self.hold(refused, outputs, offsets, firsts)
        self.pause(consumer, held)
        return outputs, offsets, firsts

    def stalled(self) -> str | None:
        """Why routes are held, for ``/ready``."""
        if not self.refused:
            return None
        return "; ".join(f"route to {topic} stalled: {why}" for topic, why in self.refused.items())

    def hold(
        self, refused: dict[str, str], outputs: list[Output], offsets: Offsets, firsts: Offsets
    ) -> tuple[list[Output], Offsets, Offsets, Offsets]:
        """Take the refused routes' partitions out of the batch: its outputs (dead letters
        too) are not sent, its offsets not committed. Returns what goes on, and the
        partitions to rewind and pause (their first offsets in this batch)."""
        topics = {tp.topic for tp in offsets}
        stopped = {
            t for t in topics if (r := self.routes.for_topic(t)) is not None and r.output in refused
        }
        kept = [o for o in outputs if o.source.topic not in stopped]
        return (
            kept,
            [tp for tp in offsets if tp.topic not in stopped],
            [tp for tp in firsts if tp.topic not in stopped],
            [tp for tp in firsts if tp.topic in stopped],
        )

    def pause(self, consumer: Consumer, partitions: Offsets) -> None:
        """Rewind ``partitions`` to their first offsets and pause them (consumer thread)."""
        try:
            consumer.pause([TopicPartition(tp.topic, tp.partition) for tp in partitions])
            for tp in partitions:
                consumer.seek(tp)
        except KafkaException as exc:  # revoked meanwhile: their next owner reads them
            logger.debug("holding %s: %s", partitions, exc)
        self._held.append((time.monotonic() + HOLD_SECONDS, partitions))

    def resume_due(self, consumer: Consumer) -> None:
        """Resume held partitions whose time is up, to try the registry again."""
        if not self._held:
            return
        now = time.monotonic()
        due = [parts for when, parts in self._held if when <= now]
        self._held = [(when, parts) for when, parts in self._held if when > now]
        for parts in due:
            try:
                consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in parts])
            except KafkaException as exc:
                logger.debug("resuming %s: %s", parts, exc)


def subscriptions(routes: Routes | None, data_topic: str) -> list[str]:
    """What the data consumer subscribes to: every route's topic or pattern, or the data topic."""
    return routes.subscriptions if routes is not None else [data_topic]


def lead_topic(routes: Routes | None, data_topic: str, assigned: set[tuple[str, int]]) -> str:
    """The topic whose partitions a worker reports (partition 0's holder decides): the
    data topic, or the first route's topic (for patterns only: the first assigned)."""
    if routes is None:
        return data_topic
    named = next((r.topic for r in routes.routes if r.topic is not None), None)
    return named or min((t for t, _ in assigned), default="")
