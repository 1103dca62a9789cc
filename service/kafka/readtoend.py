"""Read a topic up to the end offsets seen now: the one helper every caller uses.

The model feed replays the model topic this way before scoring starts; the
tools (rollback, replay of dead letters, status) read whole topics the same
way. "The end" is the high watermark of each partition when the read starts,
so records written meanwhile are left for whoever tails the topic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as TP

from service.core.settings import Settings
from service.kafka.authz import denied_as
from service.kafka.clients import rdkafka_config
from service.kafka.fetched import fetch

__all__ = ["assign_all", "drain", "read_to_end", "reader_group", "standalone_consumer"]

logger = logging.getLogger(__name__)


def reader_group(settings: Settings) -> str:
    """The group id of standalone consumers: never joined, but librdkafka looks up its
    coordinator, so on a broker with ACLs it takes DESCRIBE on this group."""
    return f"{settings.app_id}-reader"


def standalone_consumer(settings: Settings, **extra: object) -> Consumer:
    """A consumer that never joins a group: ``assign`` only, nothing committed."""
    return Consumer(
        rdkafka_config(
            settings,
            **{
                "group.id": reader_group(settings),  # required by librdkafka, never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.message.max.bytes": 64 * 1024 * 1024,
                "receive.message.max.bytes": 130 * 1024 * 1024,
                **extra,
            },
        )
    )


def assign_all(
    consumer: Consumer, topic: str, positions: dict[int, int] | None = None, timeout: float = 10.0
) -> dict[int, int]:
    """Assign every partition of ``topic`` (from ``positions`` or the beginning).

    Returns the high watermark of each partition, read now: the end to drain to.
    Raises :class:`KafkaException` when the broker does not answer in ``timeout``.
    """
    metadata = consumer.list_topics(topic, timeout=timeout)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        raise KafkaException(info.error if info is not None else KafkaError._UNKNOWN_TOPIC)
    ends: dict[int, int] = {}
    assignment: list[TP] = []
    for partition in sorted(info.partitions):
        _, high = consumer.get_watermark_offsets(TP(topic, partition), timeout=timeout)
        ends[partition] = high
        start = (positions or {}).get(partition, OFFSET_BEGINNING)
        assignment.append(TP(topic, partition, start))
    consumer.assign(assignment)
    return ends


def drain(
    consumer: Consumer,
    topic: str,
    ends: dict[int, int],
    *,
    poll: float = 0.5,
    idle_limit: float = 5.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[Message]:
    """Yield messages until every partition's position reaches its end offset.

    Offsets may have gaps (compaction, transaction markers), so progress is the
    consumer's position, not the last offset seen; if nothing arrives for
    ``idle_limit`` seconds while positions still lag (markers at the very end),
    the read is complete.
    """
    remaining = {p for p, end in ends.items() if end > 0}
    idle_since = time.monotonic()
    while remaining and not should_stop():
        messages = fetch(consumer, 500, poll, eager=True)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                raise KafkaException(error)
            yield message
        if messages:
            idle_since = time.monotonic()
        positions = consumer.position([TP(topic, p) for p in remaining])
        remaining = {
            tp.partition for tp in positions if tp.offset < 0 or tp.offset < ends[tp.partition]
        }
        if remaining and time.monotonic() - idle_since > idle_limit:
            logger.info("%s: nothing more before the end offsets %s; read complete", topic, ends)
            return


def read_to_end(settings: Settings, topic: str, *, timeout: float = 10.0) -> list[Message]:
    """Every message of ``topic`` up to its current end (for tools; blocking).

    A refused right is raised as :class:`NotAuthorized` naming this topic (or the
    reader group), so every tool that reads a whole topic says which ACL is missing.
    """
    consumer = standalone_consumer(settings)
    try:
        with denied_as("READ", topic, group=reader_group(settings), group_operation="DESCRIBE"):
            ends = assign_all(consumer, topic, timeout=timeout)
            return list(drain(consumer, topic, ends))
    finally:
        consumer.close()
