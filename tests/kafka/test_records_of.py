"""``records_of`` against a plain reference, on batches of any shape (no broker).

The commit offsets it computes decide what is read again after a crash, so
any order of offsets and any interleaving of partitions and topics must give
the highest offset + 1 and the lowest offset of each partition, exactly.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from service.kafka.fetched import records_of

logger = logging.getLogger(__name__)

_message = st.tuples(
    st.sampled_from(["a", "b"]),  # topic
    st.integers(0, 3),  # partition
    st.integers(0, 50),  # offset
    st.booleans(),  # an error the client reports for this record
)


def _batch(rows: list[tuple[str, int, int, bool]]) -> list[Message]:
    return [
        Message(
            topic=topic,
            partition=partition,
            offset=offset,
            key=b"k%d" % n,
            value=b"v%d" % n,
            timestamp=(1, 1000 + n),
            error=KafkaError(KafkaError._BAD_MSG, "corrupt") if bad else None,
        )
        for n, (topic, partition, offset, bad) in enumerate(rows)
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(_message, max_size=40))
def test_commit_offsets_are_the_highest_and_lowest_of_each_partition(
    rows: list[tuple[str, int, int, bool]],
) -> None:
    records, letters, ends, firsts = records_of(_batch(rows))
    want_ends: dict[tuple[str, int], int] = {}
    want_firsts: dict[tuple[str, int], int] = {}
    for topic, partition, offset, _ in rows:
        key = (topic, partition)
        want_ends[key] = max(want_ends.get(key, -1), offset + 1)
        want_firsts[key] = min(want_firsts.get(key, offset), offset)
    assert {(tp.topic, tp.partition): tp.offset for tp in ends} == want_ends
    assert {(tp.topic, tp.partition): tp.offset for tp in firsts} == want_firsts
    good = [(t, p, o) for t, p, o, bad in rows if not bad]
    assert [(r.topic, r.partition, r.offset) for r in records] == good
    assert [r.value for r in records] == [b"v%d" % n for n, row in enumerate(rows) if not row[3]]
    assert len(letters) == sum(1 for row in rows if row[3])


_PARTITION_STATE = [
    KafkaError.TOPIC_AUTHORIZATION_FAILED,  # READ taken away mid-stream: at the next offset
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError._TRANSPORT,
    KafkaError.OFFSET_OUT_OF_RANGE,
]
_UNREADABLE_RECORD = [KafkaError._BAD_MSG, KafkaError._BAD_COMPRESSION, KafkaError._NOT_IMPLEMENTED]


def test_an_error_about_the_partition_is_no_record_and_advances_no_offset() -> None:
    """librdkafka reports some partition errors at the offset it would fetch next: taking
    that for an unreadable record would dead-letter a record never read and commit past it."""
    for code in _PARTITION_STATE:
        at_next = Message(topic="d", partition=0, offset=7, error=KafkaError(code, "refused"))
        good = Message(topic="d", partition=1, offset=3, key=b"k", value=b"v", timestamp=(1, 1))
        records, letters, ends, firsts = records_of([at_next, good])
        assert letters == [], code
        assert [(r.partition, r.offset) for r in records] == [(1, 3)]
        assert [(tp.partition, tp.offset) for tp in ends] == [(1, 4)], code
        assert [(tp.partition, tp.offset) for tp in firsts] == [(1, 3)], code


def test_an_unreadable_record_is_dead_lettered_and_passed() -> None:
    for code in _UNREADABLE_RECORD:
        bad = Message(topic="d", partition=0, offset=7, error=KafkaError(code, "corrupt"))
        records, letters, ends, _ = records_of([bad])
        assert records == []
        assert [getattr(letter, "reason", None) for letter in letters] == ["undecodable_batch"]
        assert [(tp.partition, tp.offset) for tp in ends] == [(0, 8)], code
