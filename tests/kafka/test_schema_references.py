"""An Avro schema that names a type from another subject (a schema reference).

Parsed alone its referenced type is unknown, so every record of it was dead-lettered
``schema_decode``. No broker: the registry is a dict behind the two calls the codec makes.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import RegisteredSchema, Schema, SchemaReference

from service.kafka.schemas import SchemaCodec

_ADDRESS = {
    "type": "record",
    "name": "Address",
    "namespace": "acme",
    "fields": [{"name": "city", "type": "string"}],
}
_CUSTOMER = {
    "type": "record",
    "name": "Customer",
    "namespace": "acme",
    "fields": [{"name": "amount", "type": "double"}, {"name": "home", "type": "acme.Address"}],
}


class _Registry:
    def get_schema(self, schema_id: int) -> Schema:
        assert schema_id == 7
        ref = SchemaReference("acme.Address", "address-value", 1)
        return Schema(orjson.dumps(_CUSTOMER).decode(), "AVRO", [ref])

    def get_version(self, subject: str, version: int, *rest: Any) -> RegisteredSchema:
        assert (subject, version) == ("address-value", 1)
        return RegisteredSchema(subject, version, 3, None, Schema(orjson.dumps(_ADDRESS).decode()))


def test_a_record_of_a_schema_with_references_is_decoded() -> None:
    whole = fastavro.parse_schema({**_CUSTOMER, "fields": [
        _CUSTOMER["fields"][0], {"name": "home", "type": _ADDRESS}]})  # fmt: skip
    buffer = io.BytesIO()
    record = {"amount": 4.5, "home": {"city": "Lyon"}}
    fastavro.schemaless_writer(buffer, whole, record)
    value = b"\0" + (7).to_bytes(4, "big") + buffer.getvalue()
    reader = SchemaCodec(_Registry()).reader(7)  # type: ignore[arg-type]
    assert reader.decode(value) == record
