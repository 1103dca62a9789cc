"""Enriched outputs in the input's format: the input record plus a ``prediction`` field.

For a framed input, the output schema is derived from the input's (its fields,
then ``prediction``) and registered under the output topic's subject
(TopicNameStrategy, ``<output>-value``), once per input schema id and output
topic: a new input schema version gives a new derived version. The input's
bytes are not decoded and encoded again: a record's Avro encoding is its fields'
encodings one after the other, and a Protobuf message is the concatenation of its
fields, so the output payload is the input payload with the prediction's encoding
appended: the input's fields leave exactly as they came. JSON Schema and plain
JSON outputs are the decoded object with ``prediction`` added.

The registry refusing a derived schema (compatibility, a name taken) raises
:class:`~service.core.errors.OutputSchemaRefused` for that output topic only.
"""

from __future__ import annotations

import copy
import io
import logging
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.common.protobuf import _proto_to_str
from confluent_kafka.schema_registry.error import SchemaRegistryError
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass

from service.core import errors
from service.core.outputs import Scored, dead_letter
from service.core.shapes import enriched_json
from service.kafka.schemas import Reader, SchemaCodec, unavailable

__all__ = ["PREDICTION_AVRO", "EnrichWriter"]

logger = logging.getLogger(__name__)

_F = descriptor_pb2.FieldDescriptorProto
PREDICTION_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "HotswapPrediction",
    "namespace": "hotswap",
    "fields": [
        {"name": "model", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "label", "type": ["null", "long", "string"], "default": None},
        {"name": "probabilities", "type": ["null", {"type": "map", "values": "double"}],
         "default": None},
        {"name": "value", "type": ["null", "double"], "default": None},
    ],
}  # fmt: skip
_PREDICTION_JSON = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "version": {"type": "string"},
        "label": {"type": ["integer", "string", "null"]},
        "probabilities": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        "value": {"type": ["number", "null"]},
    },
    "required": ["model", "version"],
}
_PROTO_FIELD = 1000  # the prediction's field number (the highest free one when taken)


def _prediction_message(package: str) -> descriptor_pb2.DescriptorProto:
    """``message HotswapPrediction { model, version, label, map probabilities, value }``."""
    message = descriptor_pb2.DescriptorProto(name="HotswapPrediction")
    entry = message.nested_type.add(name="ProbabilitiesEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_DOUBLE, label=_F.LABEL_OPTIONAL)
    for number, name in enumerate(("model", "version", "label"), start=1):
        message.field.add(name=name, number=number, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    prefix = f".{package}." if package else "."
    message.field.add(
        name="probabilities", number=4, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
        type_name=f"{prefix}HotswapPrediction.ProbabilitiesEntry",
    )  # fmt: skip
    message.field.add(name="value", number=5, type=_F.TYPE_DOUBLE, label=_F.LABEL_OPTIONAL)
    return message


def _prediction_class() -> Any:
    fdp = descriptor_pb2.FileDescriptorProto(name="hotswap_prediction.proto", package="hotswap")
    fdp.syntax = "proto3"
    fdp.message_type.append(_prediction_message("hotswap"))
    pool = DescriptorPool()
    pool.Add(fdp)
    return GetMessageClass(pool.FindMessageTypeByName("hotswap.HotswapPrediction"))


def _key(number: int) -> bytes:
    """The tag of a length-delimited field ``number``, as a varint."""
    return _length((number << 3) | 2)


@dataclass(slots=True)
class _Derived:
    schema_id: int
    prefix: bytes  # magic byte and the derived schema's id
    field_key: bytes = b""  # Protobuf: the prediction field's tag
    whole: Any = None  # Avro, an input with a `prediction` of its own: the parsed derived schema


class EnrichWriter:
    """Writes enriched outputs; derived schemas registered once, then cached."""

    def __init__(self, codec: SchemaCodec) -> None:
        self._codec = codec
        self._derived: dict[tuple[int, str], _Derived] = {}
        self._avro = fastavro.parse_schema(copy.deepcopy(PREDICTION_AVRO))
        self._proto = _prediction_class()

    def encode(self, outputs: list[Any]) -> dict[str, str]:
        """Fill in the value of every enriched output; returns the output topics whose
        derived schema the registry refused, with why (their outputs are left as they are).
        Raises RegistryUnavailable when the registry cannot be reached."""
        refused: dict[str, str] = {}
        for i, out in enumerate(outputs):
            if type(out) is not Scored or not out.enrich or out.shadow or out.topic in refused:
                continue
            source = out.source
            reader: Reader | None = source.frame
            if reader is None:
                try:
                    out.value = enriched_json(source.document, out.value)
                except TypeError as exc:  # orjson cannot write it (an integer beyond 64 bits)
                    why = f"the enriched record cannot be written as JSON: {exc}"
                    outputs[i] = dead_letter(source, errors.ScoringFailed(why))
                continue
            try:
                derived = self._derive(reader, out.topic)
            except errors.OutputSchemaRefused as exc:
                refused[out.topic] = exc.detail
                continue
            value = source.value
            assert value is not None
            prediction = orjson.loads(out.value)
            if reader.kind == "AVRO" and derived.whole is not None:  # its prediction replaced
                buffer = io.BytesIO()
                record = {**source.document, "prediction": prediction}
                fastavro.schemaless_writer(buffer, derived.whole, record)
                out.value = derived.prefix + buffer.getvalue()
            elif reader.kind == "AVRO":
                buffer = io.BytesIO()
                fastavro.schemaless_writer(buffer, self._avro, prediction)
                out.value = b"".join((derived.prefix, value[5:], buffer.getvalue()))
            elif reader.kind == "PROTOBUF":
                if "label" in prediction:
                    prediction["label"] = str(prediction["label"])
                data = self._proto(**prediction).SerializeToString()
                out.value = b"".join(
                    (derived.prefix, value[5:], derived.field_key, _length(len(data)), data)
                )
            else:
                out.value = derived.prefix + orjson.dumps(
                    {**source.document, "prediction": prediction}
                )
        return refused

    def _derive(self, reader: Reader, output: str) -> _Derived:
        key = (reader.schema_id, output)
        found = self._derived.get(key)
        if found is not None:
            return found
        schema, number, whole = self._schema(reader)
        client = self._codec.client
        assert client is not None
        subject = f"{output}-value"
        try:
            schema_id = client.register_schema(subject, schema)
        except SchemaRegistryError as exc:
            if exc.http_status_code in (409, 422) or 400 <= exc.http_status_code < 404:
                raise errors.OutputSchemaRefused(
                    f"the registry refused the derived schema of {subject}: {exc}"[:500]
                ) from None
            raise unavailable(exc) from None
        except Exception as exc:
            raise unavailable(exc) from None
        logger.info("derived schema %d registered under %s (input schema %d)",
                    schema_id, subject, reader.schema_id)  # fmt: skip
        derived = _Derived(schema_id, b"\0" + schema_id.to_bytes(4, "big"))
        if number:
            derived.field_key = _key(number)
        if whole is not None:
            derived.whole = fastavro.parse_schema(whole)
        self._derived[key] = derived
        return derived

    @staticmethod
    def _schema(reader: Reader) -> tuple[Schema, int, dict[str, Any] | None]:
        """The derived schema, the prediction's field number (Protobuf), and the derived
        Avro schema when the input has a ``prediction`` of its own (an enriched record
        enriched again): the derived schema replaces that field, so appending the new
        prediction to the input's bytes would leave the old one's where no field reads
        them; such records are encoded whole instead."""
        source = reader.schema
        text = source.schema_str or ""
        if reader.kind == "AVRO":
            avro = orjson.loads(text)
            if not isinstance(avro, dict) or avro.get("type") != "record":
                raise errors.OutputSchemaRefused("only an Avro record can carry `prediction`")
            fields = [f for f in avro["fields"] if f.get("name") != "prediction"]
            derived = {**avro, "fields": [*fields, {"name": "prediction", "type": PREDICTION_AVRO}]}
            whole = derived if len(fields) < len(avro["fields"]) else None
            return Schema(orjson.dumps(derived).decode(), "AVRO", source.references), 0, whole
        if reader.kind == "PROTOBUF":
            fdp: descriptor_pb2.FileDescriptorProto = copy.deepcopy(reader.parsed)
            fdp.name = "derived.proto"
            target = fdp.message_type[0]  # the file's first message: Confluent's default
            taken = {f.number for f in target.field}
            number = _PROTO_FIELD if _PROTO_FIELD not in taken else max(taken) + 1
            names = {f.name for f in target.field}
            name = "prediction" if "prediction" not in names else f"prediction_{number}"
            if not any(m.name == "HotswapPrediction" for m in fdp.message_type):
                fdp.message_type.append(_prediction_message(fdp.package))
            prefix = f".{fdp.package}." if fdp.package else "."
            target.field.add(  # an input's own `prediction` stays: this one is numbered
                name=name, number=number, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                type_name=f"{prefix}HotswapPrediction", json_name=name,
            )  # fmt: skip
            return Schema(_proto_to_str(fdp), "PROTOBUF", source.references), number, None
        doc = orjson.loads(text)
        if not isinstance(doc, dict):
            raise errors.OutputSchemaRefused("the JSON schema is not an object schema")
        doc = {**doc, "properties": {**doc.get("properties", {}), "prediction": _PREDICTION_JSON}}
        return Schema(orjson.dumps(doc).decode(), "JSON", source.references), 0, None


def _length(n: int) -> bytes:
    """``n`` as a Protobuf varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
