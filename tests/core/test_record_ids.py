"""Records whose ids or encodings only some decoders read, on both scoring paths.

The scored record carries the input's ``id`` back, so an id must come back as it was
written or the record must be dead-lettered with its reason: never another id, and
never a stream stuck on the batch that holds it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from service.core.outputs import DeadLetter, InputRecord, Scored
from service.core.registry import ModelRegistry
from service.core.routed import RoutedScorer
from service.core.routes import Route, Routes
from service.core.scoring import BatchResult, Scorer
from tests.models import BuiltModel, MessageFactory

_BIG = b"18446744073709551616"  # 2**64: beyond what orjson reads as an integer


def _scorers(registry: ModelRegistry) -> dict[str, Any]:
    scorer = Scorer(registry, max_record_bytes=100_000)
    routes = Routes([Route(topic="records", model="wine", output="out", mode="envelope")])
    return {
        "envelope": scorer,
        "routed": RoutedScorer(scorer, routes, max_record_bytes=100_000),
    }


@pytest.fixture
def registry(make_message: MessageFactory) -> ModelRegistry:
    registry = ModelRegistry()
    registry.install(registry.build(make_message()))
    return registry


def _score(scorer: Any, values: list[bytes]) -> BatchResult:
    records = [InputRecord(b"k%d" % i, v, "records", 0, i) for i, v in enumerate(values)]
    result = scorer.score(records)
    assert isinstance(result, BatchResult)
    return result


def _outcome(result: BatchResult) -> list[Any]:
    """Per input offset: the scored id, or the dead-letter reason."""
    out: list[Any] = []
    for o in result.outputs:
        if isinstance(o, Scored):
            out.append(("id", orjson.loads(o.value or b"")["id"]))
        else:
            assert isinstance(o, DeadLetter)
            out.append(("dead", o.reason))
    return out


@pytest.mark.parametrize("path", ["envelope", "routed"])
def test_ids_come_back_as_written_or_the_record_is_dead_lettered(
    registry: ModelRegistry, wine_model: BuiltModel, path: str
) -> None:
    scorer = _scorers(registry)[path]
    row = orjson.dumps(wine_model.sample_inputs[0])
    values = [
        b'{"id": 1, "model": "wine", "features": %s}' % row,
        b'{"id": %s, "model": "wine", "features": %s}' % (_BIG, row),
        b'{"id": -%s, "model": "wine", "features": %s}' % (_BIG, row),
        b'{"id": 1.5, "model": "wine", "features": %s}' % row,
        b'{"id": "\\ud800", "model": "wine", "features": %s}' % row,
        b'{"id": 18446744073709551615, "model": "wine", "features": %s}' % row,  # 2**64 - 1
    ]
    assert _outcome(_score(scorer, values)) == [
        ("id", 1),
        ("dead", "scoring_failed"),  # orjson read 1.8446744073709552e+19: never sent back
        ("dead", "scoring_failed"),
        ("id", 1.5),
        ("dead", "scoring_failed"),
        ("id", 2**64 - 1),
    ]


@pytest.mark.parametrize("path", ["envelope", "routed"])
def test_a_record_with_a_byte_order_mark_is_read(
    registry: ModelRegistry, wine_model: BuiltModel, path: str
) -> None:
    """Some Windows and .NET producers start UTF-8 JSON with a BOM."""
    scorer = _scorers(registry)[path]
    doc = orjson.dumps({"id": "bom", "model": "wine", "features": wine_model.sample_inputs[0]})
    assert _outcome(_score(scorer, [b"\xef\xbb\xbf" + doc, doc])) == [("id", "bom"), ("id", "bom")]


def test_an_id_that_cannot_be_written_costs_a_routed_record_only_itself(
    registry: ModelRegistry, wine_model: BuiltModel
) -> None:
    """Framed records arrive decoded: an Avro ``bytes`` or ``decimal`` id is no JSON value."""
    scorer = _scorers(registry)["routed"]
    records = []
    for i, record_id in enumerate([1, b"\x00raw", Decimal("12.30"), 4]):
        record = InputRecord(b"k", b"framed", "records", 0, i)
        record.document = {"id": record_id, "features": wine_model.sample_inputs[0]}
        records.append(record)
    result = scorer.score(records)
    assert _outcome(result) == [
        ("id", 1),
        ("dead", "scoring_failed"),
        ("dead", "scoring_failed"),
        ("id", 4),
    ]


def test_a_framed_record_over_the_size_limit_is_refused_as_a_plain_one_is(
    registry: ModelRegistry, wine_model: BuiltModel
) -> None:
    scorer = RoutedScorer(
        Scorer(registry, max_record_bytes=100),
        Routes([Route(topic="records", model="wine", output="out", mode="envelope")]),
        max_record_bytes=100,
    )
    records = []
    for i, size in enumerate([50, 101]):
        record = InputRecord(b"k", b"\0" * size, "records", 0, i)
        record.document = {"id": i, "features": wine_model.sample_inputs[0]}
        records.append(record)
    assert _outcome(scorer.score(records)) == [("id", 0), ("dead", "record_too_large")]
