"""Where the label join's state lives in Kafka: its changelog topic, read back per partition.

The changelog is a topic of its own (``HOTSWAP_LABEL_STATE_TOPIC``, default
``APP_ID.labels-join``) with as many partitions as the data topic; partition
``p`` holds the events of data partition ``p``'s join (see
:mod:`service.core.join_log`). It is deleted by time (the label window plus
the quality window plus an hour) and by size (``HOTSWAP_LABEL_STATE_BYTES``
per partition), so it is bounded on disk as the state is in memory; the
snapshots written every minute keep the totals since each version began.

These calls block: the labels feed runs them on its own threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from service.core.join_log import apply_event
from service.core.labels import PartitionJoin
from service.core.settings import Settings
from service.kafka.clients import rdkafka_config

__all__ = ["changelog_producer", "create_join_topics", "labels_consumer", "restore_join"]

logger = logging.getLogger(__name__)


def create_join_topics(settings: Settings, timeout: float = 10.0) -> int:
    """Create the labels topic and the changelog if absent; the data topic's partition count.

    Both get as many partitions as the data topic (at least
    ``HOTSWAP_DATA_PARTITIONS``): labels keyed like the records then land on the
    partition number of their records, which is what the join relies on.
    """
    s = settings
    admin = AdminClient(rdkafka_config(s))
    meta = admin.list_topics(timeout=timeout)
    data = meta.topics.get(s.data_topic)
    counted = len(data.partitions) if data and not data.error else 0
    partitions = max(s.data_partitions, counted)
    retention_ms = int((s.label_window + s.quality_window + 3600) * 1000)
    per_partition = s.label_state_bytes // partitions  # the state's share, in memory and on disk
    segment = max(1024 * 1024, min(per_partition // 4, 1024**3))
    wanted = [
        NewTopic(s.labels_topic, counted or partitions, s.replication_factor),
        NewTopic(
            s.label_state_topic_name,
            partitions,
            s.replication_factor,
            config={
                "cleanup.policy": "delete",
                "retention.ms": str(retention_ms),
                "retention.bytes": str(max(per_partition, segment)),
                "segment.bytes": str(segment),
                "max.message.bytes": str(16 * 1024 * 1024),
            },
        ),
    ]
    missing = [t for t in wanted if t.topic not in meta.topics]
    for topic, future in (admin.create_topics(missing) if missing else {}).items():
        try:
            future.result(timeout)
            logger.info("created topic %s", topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    labels = meta.topics.get(s.labels_topic)
    if labels is not None and not labels.error and counted and len(labels.partitions) != counted:
        logger.warning(
            "%s has %d partitions and %s %d: labels are joined only when they land on the "
            "partition number of their records (same key, same partitioner, same count)",
            s.labels_topic,
            len(labels.partitions),
            s.data_topic,
            counted,
        )
    return partitions


def changelog_producer(settings: Settings) -> Producer:
    """Idempotent, acks from every replica, in order: the log replays as it was applied."""
    return Producer(
        rdkafka_config(
            settings,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 50,
                "compression.type": "lz4",
                "message.max.bytes": 16 * 1024 * 1024,
            },
        )
    )


def labels_consumer(settings: Settings) -> Consumer:
    """Assigned by hand the partitions of the data topic this worker holds; commits nothing
    (the next offset of each partition is kept in the changelog, with the state)."""
    return Consumer(
        rdkafka_config(
            settings,
            **{
                "group.id": f"{settings.app_id}.labels",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            },
        )
    )


def restore_join(
    settings: Settings,
    partition: int,
    make: Callable[[int], PartitionJoin],
    stopping: Callable[[], bool],
) -> PartitionJoin:
    """Replay changelog partition ``partition`` to the end it had when this began."""
    join = make(partition)
    topic = settings.label_state_topic_name
    consumer = Consumer(
        rdkafka_config(
            settings,
            **{
                "group.id": f"{settings.app_id}.labels-restore",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            },
        )
    )
    started = time.monotonic()
    events = 0
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high > low:
            consumer.assign([TopicPartition(topic, partition, low)])
            position = low
            while position < high and not stopping():
                for message in consumer.consume(1000, 1.0):
                    if message.error() is not None:
                        continue
                    position = (message.offset() or position) + 1
                    value = message.value()
                    if value:
                        apply_event(join, value)
                        events += 1
    finally:
        consumer.close()
    join.expire(time.time())
    logger.info(
        "label join of partition %d restored: %d events, %d records waiting, %.2fs",
        partition,
        events,
        len(join.entries),
        time.monotonic() - started,
    )
    return join
