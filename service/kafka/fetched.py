"""Fetching a batch of the data topic and reading what came back.

:func:`fetch` gathers a batch the way each guarantee wants it; :func:`unstarted`
spots librdkafka's report that it never started a partition; :func:`records_of`
turns the fetched messages into input records, dead letters for records the
client could not read, and the offsets to commit. Errors about a partition
(a missing right, a coordinator away) are not records: they are logged and
advance no offset, so nothing is skipped while they last.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from service.core import errors
from service.core.scoring import InputRecord
from service.kafka.authz import is_denial
from service.kafka.batch import GROUP_REFUSALS, LATENCY_SAMPLES
from service.kafka.delivery import Output
from service.kafka.refused import tombstone_letter

__all__ = ["fetch", "records_of", "unstarted"]

logger = logging.getLogger(__name__)


def fetch(consumer: Consumer, most: int, timeout: float, eager: bool) -> list[Message]:
    """Up to ``most`` records. ``eager``: what has arrived, waiting up to ``timeout`` only
    for the first record (a quiet stream is scored at once); otherwise records gathered
    for up to ``timeout`` (an exactly_once transaction of a useful size)."""
    if not eager:
        return consumer.consume(most, timeout)
    messages = consumer.consume(most, 0)
    if messages:
        return messages
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]


_COORDINATOR_GONE = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE}


def unstarted(messages: list[Message]) -> bool:
    """Whether the client reports that the group's committed offsets could not be read.

    librdkafka then never starts fetching the partitions it was reading them for (issue
    #5586: a request-level ``NOT_COORDINATOR`` on OffsetFetch is not retried), and the
    consumer sits idle with a growing lag. Assigning them again reads the offsets anew.
    """
    return any(
        (error := m.error()) is not None
        and m.offset() is None
        and (error.code() in _COORDINATOR_GONE or "committed offsets" in error.str())
        for m in messages
    )


# Errors librdkafka reports for the records at an offset (corrupt, undecodable): these
# are dead-lettered and passed; any other error at an offset names the partition's state.
_UNREADABLE = frozenset(
    {
        KafkaError._BAD_MSG,
        KafkaError._BAD_COMPRESSION,
        KafkaError._NOT_IMPLEMENTED,  # a compression codec this client was built without
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.UNSUPPORTED_COMPRESSION_TYPE,
        KafkaError._UNSUPPORTED_FEATURE,
    }
)


def records_of(
    messages: list[Message],
) -> tuple[list[InputRecord], list[Output], list[TopicPartition], list[TopicPartition]]:
    """Input records, dead letters for what the client could not read, and per partition
    the offset to commit (after the highest read) and the first offset read.

    Only every few records keep their Kafka timestamp: the end-to-end latency
    histogram observes a sample of each batch anyway (see :func:`account`).
    """
    records: list[InputRecord] = []
    letters: list[Output] = []
    lows: dict[tuple[str, int], int] = {}
    highs: dict[tuple[str, int], int] = {}
    append, make = records.append, InputRecord
    step = max(1, len(messages) // LATENCY_SAMPLES)
    run: tuple[str, int] | None = None  # a fetch returns runs of one partition: their
    low = high = 0  # lowest and highest offsets are kept here, merged once per run
    for n, m in enumerate(messages):
        topic, partition, offset = m.topic() or "", m.partition(), m.offset()
        if partition is None or offset is None or offset < 0:
            if (error := m.error()) is None or error.code() not in GROUP_REFUSALS:
                logger.warning("data consumer: %s", error)  # a refusal: said once, by seen()
            continue
        error = m.error()
        if error is None:
            stamp = m.timestamp()[1] / 1000 if n % step == 0 else None
            append(make(m.key(), m.value(), topic, partition, offset, stamp))
        elif error.code() not in _UNREADABLE:  # about the partition, not a record: the
            if not is_denial(error):  # offset is where fetching stands, so nothing is
                logger.warning("data consumer: %s", error)  # skipped (a denial: said once)
            continue
        else:
            where = InputRecord(None, None, topic, partition, offset)
            letters.append(tombstone_letter(where, errors.UndecodableBatch(str(error)[:500])))
        if run is not None and partition == run[1] and topic == run[0]:
            if offset > high:
                high = offset
            elif offset < low:
                low = offset
            continue
        if run is not None:
            _merge(lows, highs, run, low, high)
        run, low, high = (topic, partition), offset, offset
    if run is not None:
        _merge(lows, highs, run, low, high)
    return (
        records,
        letters,
        [TopicPartition(t, p, o + 1) for (t, p), o in highs.items()],
        [TopicPartition(t, p, o) for (t, p), o in lows.items()],
    )


def _merge(
    lows: dict[tuple[str, int], int],
    highs: dict[tuple[str, int], int],
    run: tuple[str, int],
    low: int,
    high: int,
) -> None:
    """Fold one run's lowest and highest offsets into its partition's."""
    known = lows.get(run)
    if known is None:
        lows[run], highs[run] = low, high
    else:
        lows[run], highs[run] = min(known, low), max(highs[run], high)
