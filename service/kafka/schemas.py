"""Records in the Confluent wire format, decoded with the Schema Registry's schemas.

A framed record is magic byte 0, a 4-byte schema id and the payload. The schema
of each id is asked of the registry once (confluent-kafka's client, which caches
too) and kept as a :class:`Reader`: Avro payloads decode with fastavro's
``schemaless_reader``, Protobuf ones with a message class built from the
registered descriptor, JSON Schema ones with orjson. A batch is decoded on the
feed's thread before scoring, so no registry call ever blocks the event loop.

Failures are named: an id the registry does not hold is ``schema_unknown``, a
payload that does not decode is ``schema_decode`` (both dead-lettered); a
registry that cannot be reached or answers 5xx raises
:class:`~service.core.errors.RegistryUnavailable`: the batch waits and is read
again, nothing is dead-lettered for it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastavro
import httpx
import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry._sync.avro import _resolve_named_schema as _resolve_avro_names
from confluent_kafka.schema_registry._sync.protobuf import _resolve_named_schema
from confluent_kafka.schema_registry.common.avro import parse_schema_with_repo
from confluent_kafka.schema_registry.common.protobuf import _init_pool, _str_to_proto
from confluent_kafka.schema_registry.error import SchemaRegistryError
from google.protobuf import descriptor_pb2, json_format
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass

from service.core import errors
from service.core.outputs import InputRecord
from service.core.settings import Settings

__all__ = ["Reader", "SchemaCodec", "framed", "message_indexes", "registry_client"]

logger = logging.getLogger(__name__)

Decode = Callable[[bytes], Any]


def framed(value: bytes | None) -> bool:
    """True for a Confluent wire-format record (magic byte 0, then a 4-byte id)."""
    return value is not None and len(value) > 4 and value[0] == 0


def registry_client(settings: Settings) -> SchemaRegistryClient | None:
    """The registry client of ``HOTSWAP_SCHEMA_REGISTRY_*``, or None when no URL is set."""
    if not settings.schema_registry_url:
        return None
    conf: dict[str, Any] = {"url": settings.schema_registry_url, "timeout": 5, "max.retries": 0}
    if settings.schema_registry_user:
        password = settings.schema_registry_password.get_secret_value()
        conf["basic.auth.user.info"] = f"{settings.schema_registry_user}:{password}"
    return SchemaRegistryClient(conf)


def unavailable(exc: Exception) -> errors.RegistryUnavailable:
    """A registry failure that is not the record's: the batch waits for the registry."""
    return errors.RegistryUnavailable(f"schema registry: {type(exc).__name__}: {exc}"[:300])


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos  # zigzag
        shift += 7


def message_indexes(value: bytes) -> tuple[list[int], int]:
    """A framed Protobuf record's message indexes and where its payload starts."""
    if value[5] == 0:
        return [0], 6
    count, pos = _varint(value, 5)
    indexes = []
    for _ in range(count):
        index, pos = _varint(value, pos)
        indexes.append(index)
    return indexes, pos


@dataclass(slots=True)
class Reader:
    """How records of one schema id decode, and the schema itself (for derived ones)."""

    schema_id: int
    kind: str  # AVRO, PROTOBUF or JSON
    schema: Schema
    parsed: Any = None  # fastavro's parsed schema, or the FileDescriptorProto
    pool: DescriptorPool | None = None
    classes: dict[tuple[int, ...], Any] = field(default_factory=dict)

    def decode(self, value: bytes) -> dict[str, Any]:
        if self.kind == "AVRO":
            stream = io.BytesIO(value)
            stream.seek(5)
            doc = fastavro.schemaless_reader(stream, self.parsed, None)
            if stream.tell() != len(value):
                raise ValueError(f"{len(value) - stream.tell()} bytes after the record")
        elif self.kind == "PROTOBUF":
            indexes, start = message_indexes(value)
            message = self.message_class(indexes)()
            message.ParseFromString(value[start:])
            doc = json_format.MessageToDict(
                message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        else:
            doc = orjson.loads(memoryview(value)[5:])
        if type(doc) is not dict:
            raise ValueError(f"the record is a {type(doc).__name__}, not a record/object")
        return doc  # type: ignore[no-any-return]

    def message_class(self, indexes: Sequence[int]) -> Any:
        key = tuple(indexes)
        found = self.classes.get(key)
        if found is None:
            assert self.pool is not None
            found = self.classes[key] = GetMessageClass(
                self.pool.FindMessageTypeByName(self.message_name(indexes))
            )
        return found

    def message_name(self, indexes: Sequence[int]) -> str:
        """The full name of the message the indexes point at (top level, then nested)."""
        fdp: descriptor_pb2.FileDescriptorProto = self.parsed
        messages: Any = fdp.message_type
        names = []
        for index in indexes:
            message = messages[index]
            names.append(message.name)
            messages = message.nested_type
        return ".".join([fdp.package, *names] if fdp.package else names)


class SchemaCodec:
    """Decodes framed records of a batch; schemas kept per id for the worker's life."""

    def __init__(self, client: SchemaRegistryClient | None) -> None:
        self.client = client
        self._readers: dict[int, Reader] = {}

    def decode(self, records: Sequence[InputRecord]) -> None:
        """Set each framed record's ``document`` (a dict, or why it is refused) and
        ``frame`` (its :class:`Reader`); unframed records are left for plain JSON."""
        unknown: dict[int, errors.SchemaUnknown] = {}
        for record in records:
            value = record.value
            if not framed(value):
                continue
            assert value is not None
            schema_id = int.from_bytes(value[1:5], "big")
            reader = self._readers.get(schema_id)
            if reader is None:
                if schema_id in unknown:
                    record.document = unknown[schema_id]
                    continue
                try:
                    reader = self.reader(schema_id)
                except errors.SchemaDecode as exc:
                    record.document = exc
                    continue
                except errors.SchemaUnknown as exc:
                    record.document = unknown[schema_id] = exc
                    continue
            try:
                record.document = reader.decode(value)
                record.frame = reader
            except Exception as exc:
                record.document = errors.SchemaDecode(
                    f"{reader.kind} payload does not decode with schema {schema_id}: {exc}"[:500]
                )

    def reader(self, schema_id: int) -> Reader:
        """The reader of ``schema_id``, asked of the registry the first time."""
        found = self._readers.get(schema_id)
        if found is not None:
            return found
        if self.client is None:
            raise errors.SchemaUnknown(
                f"framed record (schema id {schema_id}) but no HOTSWAP_SCHEMA_REGISTRY_URL"
            )
        try:
            schema = self.client.get_schema(schema_id)  # Protobuf: as registered (base64)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise errors.SchemaUnknown(f"the registry has no schema {schema_id}") from None
            raise unavailable(exc) from None
        except Exception as exc:  # unreachable, timed out: not the record's fault
            raise unavailable(exc) from None
        reader = self._parse(schema_id, schema)
        self._readers[schema_id] = reader
        logger.info("schema %d (%s) read from the registry", schema_id, reader.kind)
        return reader

    def _parse(self, schema_id: int, schema: Schema) -> Reader:
        kind = (schema.schema_type or "AVRO").upper()
        reader = Reader(schema_id, kind, schema)
        try:
            if kind == "AVRO" and schema.references:  # named types from other subjects
                named = _resolve_avro_names(schema, self.client)  # type: ignore[arg-type]
                reader.parsed = parse_schema_with_repo(schema.schema_str or "", named)
            elif kind == "AVRO":
                reader.parsed = fastavro.parse_schema(orjson.loads(schema.schema_str or ""))
            elif kind == "PROTOBUF":
                pool = DescriptorPool()
                _init_pool(pool)
                _resolve_named_schema(schema, self.client, pool)  # type: ignore[arg-type]
                reader.parsed = _str_to_proto(f"hotswap-{schema_id}.proto", schema.schema_str or "")
                pool.Add(reader.parsed)
                reader.pool = pool
        except (SchemaRegistryError, httpx.HTTPError, OSError) as exc:  # references fetched
            raise unavailable(exc) from None
        except Exception as exc:
            raise errors.SchemaDecode(f"schema {schema_id} cannot be used: {exc}"[:500]) from None
        return reader
