"""The publisher against the real broker: every output lands once, in order, even when
librdkafka's local queue fills up mid-batch (``BufferError``) and outputs of every kind
(scored, keyless, shadow, dead letter) are mixed in one batch.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import pytest

from scripts.harness import ConsumedRecord, consume
from service.core.messages import HEADER_SOURCE_OFFSET
from service.core.outputs import DeadLetter, InputRecord, Scored
from service.core.settings import Settings
from service.kafka.clients import ensure_topics
from service.kafka.publisher import Output, Publisher

pytestmark = pytest.mark.integration


def _outputs(settings: Settings, n: int) -> list[Output]:
    outputs: list[Output] = []
    for i in range(n):
        source = InputRecord(f"k{i % 37}".encode(), b"{}", settings.data_topic, i % 3, i)
        headers = [(HEADER_SOURCE_OFFSET, b"%d" % i)]
        value = f'{{"n": {i}}}'.encode()
        if i % 50 == 7:
            outputs.append(DeadLetter(source.key, source.value, headers, "r", "d", source))
        elif i % 50 == 11:
            outputs.append(Scored(None, value, headers, "m", "1", source))  # keyless
        elif i % 50 == 13:
            outputs.append(Scored(source.key, value, headers, "m", "2", source, shadow=True))
        else:
            outputs.append(Scored(source.key, value, headers, "m", "1", source))
    return outputs


def _offsets(records: list[ConsumedRecord]) -> list[int]:
    return [int(r.headers[HEADER_SOURCE_OFFSET]) for r in records]


def test_a_full_local_queue_loses_reorders_and_doubles_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    publisher = Publisher(settings, transactional=False, queue_limit=50)
    publisher.start(10.0)
    outputs = _outputs(settings, 3000)
    publisher.begin()
    publisher.send(outputs)  # 3000 outputs through a queue of 50: BufferError many times
    left, failures = publisher.wait(30.0)
    assert (left, failures) == (0, [])

    expected: dict[str, list[int]] = defaultdict(list)
    for out in outputs:
        if isinstance(out, DeadLetter):
            expected[settings.dead_letter_topic].append(out.source.offset)
        elif out.shadow:
            expected[settings.shadow_topic].append(out.source.offset)
        else:
            expected[settings.scored_topic].append(out.source.offset)
    for topic, offsets in expected.items():
        want = len(offsets)
        got = consume(settings, topic, until=lambda rs: len(rs) >= want)  # noqa: B023
        assert sorted(_offsets(got)) == offsets, topic  # each exactly once
        by_partition: dict[int, list[int]] = defaultdict(list)
        for record in got:
            by_partition[record.partition].append(int(record.headers[HEADER_SOURCE_OFFSET]))
        for partition, seen in by_partition.items():
            assert seen == sorted(seen), f"{topic}[{partition}] out of order"
    publisher.close(5.0)
