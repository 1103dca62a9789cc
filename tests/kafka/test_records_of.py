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

from service.kafka.batch import records_of

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
