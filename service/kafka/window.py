"""Read a window of past records from the data topic, for ``hotswap backtest``.

A standalone consumer (no group: nothing committed, no worker's partitions
moved), assigned every partition from a start offset: a given offset, the
first offset at or after a given time, or (by default) as far back as needed
for ``count`` records across the partitions. It reads up to ``count`` records
or to the end offsets seen at the start, whichever comes first.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime

from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as TP

from service.core.outputs import InputRecord
from service.core.settings import Settings
from service.kafka.authz import is_denial
from service.kafka.fetched import records_of
from service.kafka.readtoend import drain, standalone_consumer

__all__ = ["read_window"]

logger = logging.getLogger(__name__)


def read_window(
    settings: Settings,
    *,
    count: int,
    from_offset: int | None = None,
    from_time: datetime | None = None,
    timeout: float = 10.0,
) -> list[InputRecord]:
    """Up to ``count`` records of the data topic from the chosen start (blocking)."""
    topic = settings.data_topic
    consumer = standalone_consumer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is not None and is_denial(metadata.error):
            raise KafkaException(metadata.error)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return []
        partitions = sorted(metadata.partitions)
        marks = {
            p: consumer.get_watermark_offsets(TP(topic, p), timeout=timeout) for p in partitions
        }
        if from_time is not None:
            wanted = [TP(topic, p, int(from_time.timestamp() * 1000)) for p in partitions]
            found = consumer.offsets_for_times(wanted, timeout=timeout)
            starts = {
                tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1]
                for tp in found
            }
        elif from_offset is not None:
            starts = {p: max(low, from_offset) for p, (low, _) in marks.items()}
        else:
            share = math.ceil(count / len(partitions))
            starts = {p: max(low, high - share) for p, (low, high) in marks.items()}
        ends = {p: marks[p][1] for p in partitions if starts[p] < marks[p][1]}
        if not ends:
            return []
        consumer.assign([TP(topic, p, starts[p]) for p in sorted(ends)])
        messages = []
        for message in drain(consumer, topic, ends):
            messages.append(message)
            if len(messages) >= count:
                break
        records = records_of(messages)[0]
        logger.info("read %d records of %s from %s", len(records), topic, starts)
        return records
    finally:
        consumer.close()
