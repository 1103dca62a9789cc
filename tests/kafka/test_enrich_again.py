"""An enriched record enriched again: the input already has a ``prediction`` field.

The derived schema replaces that field with hotswap's; appending the new prediction to
the input's Avro bytes left the old field's bytes where no field of the derived schema
reads them, so every consumer got undecodable (or wrong) records. Such records are now
encoded whole; Protobuf keeps the input's field and numbers its own. No broker: the
registry is a dict behind the client's two calls the writer makes.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import Schema

from service.core.outputs import InputRecord, Scored
from service.kafka.derived import EnrichWriter
from service.kafka.schemas import Reader, SchemaCodec

_INPUT = {
    "type": "record",
    "name": "Payment",
    "fields": [
        {"name": "amount", "type": "double"},
        {"name": "prediction", "type": "string"},
        {"name": "note", "type": "string"},
    ],
}


class _Registry:
    """register_schema and get_schema, as SchemaRegistryClient answers them."""

    def __init__(self) -> None:
        self.schemas: dict[int, Schema] = {}

    def register_schema(self, subject: str, schema: Schema) -> int:
        self.schemas[len(self.schemas) + 100] = schema
        return len(self.schemas) + 99

    def get_schema(self, schema_id: int) -> Schema:
        return self.schemas[schema_id]


def _framed(schema_id: int, parsed: Any, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, record)
    return b"\0" + schema_id.to_bytes(4, "big") + buffer.getvalue()


def test_an_avro_record_with_a_prediction_of_its_own_is_written_decodable() -> None:
    registry = _Registry()
    writer = EnrichWriter(SchemaCodec(registry))  # type: ignore[arg-type]
    parsed = fastavro.parse_schema(_INPUT)
    record = {"amount": 12.5, "prediction": "from an earlier stage", "note": "n"}
    value = _framed(7, parsed, record)
    reader = Reader(7, "AVRO", Schema(orjson.dumps(_INPUT).decode(), "AVRO"), parsed)
    source = InputRecord(b"k", value, "in", 0, 0)
    source.frame, source.document = reader, reader.decode(value)
    prediction = {"model": "fraud", "version": "1", "label": 1, "probabilities": {"0": 0.2}}
    out = Scored(b"k", orjson.dumps(prediction), [], "fraud", "1", source)
    out.topic, out.enrich = "out", True

    assert writer.encode([out]) == {}
    assert out.value is not None
    schema_id = int.from_bytes(out.value[1:5], "big")
    derived = fastavro.parse_schema(orjson.loads(registry.get_schema(schema_id).schema_str or ""))
    stream = io.BytesIO(out.value[5:])
    got = fastavro.schemaless_reader(stream, derived, None)
    assert stream.tell() == len(out.value) - 5, "bytes left over: the record is corrupt"
    assert got == {
        "amount": 12.5,
        "note": "n",
        "prediction": {**prediction, "value": None},
    }
