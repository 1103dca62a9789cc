"""A plain-JSON enrich route writes the record back with its prediction; one that orjson
cannot write (an integer beyond 64 bits, which Python's parser read) is dead-lettered alone.

It raised out of the whole batch, which was read again for ever: one record stalled its
partition. No broker: the writer's JSON path needs no registry.
"""

from __future__ import annotations

from typing import Any, cast

import orjson

from service.core.outputs import DeadLetter, InputRecord, Scored
from service.kafka.derived import EnrichWriter


def _enriched(document: dict[str, Any], offset: int) -> Scored:
    source = InputRecord(b"k", orjson.dumps({"n": offset}), "records", 0, offset)
    source.document = document
    prediction = b'{"model": "wine", "version": "1", "value": 1.0}'
    return Scored(b"k", prediction, [], "wine", "1", source, topic="out", enrich=True)


def test_an_unwritable_enriched_record_is_dead_lettered_and_the_others_written() -> None:
    outputs: list[Any] = [_enriched({"a": 1}, 0), _enriched({"a": 2**70}, 1), _enriched({}, 2)]
    assert EnrichWriter(cast(Any, None)).encode(outputs) == {}
    assert [type(o) for o in outputs] == [Scored, DeadLetter, Scored]
    assert orjson.loads(outputs[0].value) == {
        "a": 1,
        "prediction": {"model": "wine", "version": "1", "value": 1.0},
    }
    letter = outputs[1]
    assert (letter.reason, letter.source.offset) == ("scoring_failed", 1)
    assert "cannot be written as JSON" in letter.detail
