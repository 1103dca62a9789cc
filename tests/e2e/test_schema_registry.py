"""Routes over a real broker and a real Schema Registry (Apicurio): every format in,
enriched outputs out in the input's format, schema evolution, bad records, an outage."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from scripts.harness import WorkerProcess, consume, publish_file, wait_for
from scripts.localregistry import LocalRegistry
from service.core.messages import HEADER_REASON
from service.core.settings import Settings
from service.kafka.schemas import SchemaCodec
from tests.e2e.schemafixtures import (
    PAYMENT_AVRO,
    TcpProxy,
    create_topics,
    expected_label,
    payment,
    payment_proto_class,
    produce,
    train_fraud,
    write_routes,
)

pytestmark = pytest.mark.integration

PAYMENT_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "amount": {"type": "number"},
        "merchant": {"type": "object", "properties": {"risk": {"type": "number"}}},
        "card_present": {"type": "boolean"},
    },
}


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return train_fraud(tmp_path_factory.mktemp("fraud"))


def _routed(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    registry_url: str,
    kinds: list[str],
    mode: str = "enrich",
) -> tuple[Settings, dict[str, tuple[str, str]]]:
    """Settings routing one input topic per kind to its own output topic."""
    base = make_settings()
    topics = {k: (f"{base.data_topic}-{k}", f"{base.data_topic}-{k}.scored") for k in kinds}
    routes = [{"topic": i, "model": "fraud", "output": o, "mode": mode} for i, o in topics.values()]
    for route in routes:  # the plain JSON topic through a pattern (librdkafka's `^` form)
        if route["topic"].endswith("-plain"):
            route["pattern"] = route.pop("topic").replace("-plain", "-pla[in]+$")
    path = write_routes(tmp_path / "routes.yaml", routes)
    settings = base.model_copy(update={"routes": str(path), "schema_registry_url": registry_url})
    create_topics(settings, [i for i, _ in topics.values()])
    return settings, topics


def _reasons(settings: Settings, count: int) -> dict[bytes, str]:
    letters = consume(settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= count)
    return {r.key or b"": r.headers[HEADER_REASON].decode() for r in letters}


def test_every_format_in_is_enriched_out_in_its_own_format(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    schema_registry: LocalRegistry,
    fraud: tuple[Path, Any],
    tmp_path: Path,
) -> None:
    path, model = fraud
    kinds = ["avro", "proto", "jsonschema", "plain"]
    settings, topics = _routed(make_settings, tmp_path, schema_registry.url, kinds)
    # exactly_once here (every route's outputs and offsets in one transaction per batch);
    # the outage test below runs at_least_once.
    settings = settings.model_copy(update={"processing_guarantee": "exactly_once"})
    client = SchemaRegistryClient({"url": schema_registry.url, "timeout": 30})
    publish_file(settings, path, "fraud", "1")
    worker = workers(settings)
    worker.wait_ready()

    records = [payment(n) for n in range(12)]
    keys = [f"k{n}".encode() for n in range(12)]
    avro = AvroSerializer(client, orjson.dumps(PAYMENT_AVRO).decode())
    produce(settings, topics["avro"][0], list(zip(keys, records)), avro)
    proto_class = payment_proto_class()
    proto = ProtobufSerializer(proto_class, client, {"use.deprecated.format": False})
    messages = [proto_class(**_proto_fields(r)) for r in records]
    produce(settings, topics["proto"][0], list(zip(keys, messages)), proto)
    as_json = JSONSerializer(orjson.dumps(PAYMENT_JSON_SCHEMA).decode(), client)
    produce(settings, topics["jsonschema"][0], list(zip(keys, records)), as_json)
    produce(settings, topics["plain"][0], [(k, orjson.dumps(r)) for k, r in zip(keys, records)])

    # Avro: read back with the registry alone; every input field unchanged.
    out = consume(settings, topics["avro"][1], until=lambda rs: len(rs) >= 12)
    reader = AvroDeserializer(client)
    ctx = SerializationContext(topics["avro"][1], MessageField.VALUE)
    by_key = {r.key: reader(r.value, ctx) for r in out}
    assert len(by_key) == 12
    for key, record in zip(keys, records):
        got = by_key[key]
        prediction = got.pop("prediction")
        assert got == {**record, "merchant": {**record["merchant"]}}
        assert prediction["label"] == expected_label(model, record)
        assert prediction["model"] == "fraud"
        assert prediction["version"] == "1"
        assert set(prediction["probabilities"]) == {"0", "1"}
    assert client.get_versions(f"{topics['avro'][1]}-value") == [1]

    # Protobuf: the derived schema registered under the output subject; payload = input + field.
    out = consume(settings, topics["proto"][1], until=lambda rs: len(rs) >= 12)
    codec = SchemaCodec(client)
    for r in out:
        assert r.value is not None
        assert r.value[0] == 0
        doc = codec.reader(int.from_bytes(r.value[1:5], "big")).decode(r.value)
        record = records[keys.index(r.key or b"")]
        assert doc["id"] == record["id"]
        assert doc["amount"] == record["amount"]
        assert doc["prediction"]["label"] == str(expected_label(model, record))
    assert client.get_versions(f"{topics['proto'][1]}-value") == [1]

    # JSON Schema: JSONDeserializer with the registry's writer schema.
    out = consume(settings, topics["jsonschema"][1], until=lambda rs: len(rs) >= 12)
    json_reader = JSONDeserializer(None, schema_registry_client=client)
    ctx = SerializationContext(topics["jsonschema"][1], MessageField.VALUE)
    for r in out:
        doc = json_reader(r.value, ctx)
        record = records[keys.index(r.key or b"")]
        prediction = doc.pop("prediction")
        assert doc == record
        assert prediction["label"] == expected_label(model, record)

    # Plain JSON in, plain JSON out.
    out = consume(settings, topics["plain"][1], until=lambda rs: len(rs) >= 12)
    for r in out:
        doc = r.json()
        record = records[keys.index(r.key or b"")]
        prediction = doc.pop("prediction")
        assert doc == record
        assert prediction["label"] == expected_label(model, record)

    # Evolution: v2 of the input schema (a field with a default) gives derived version 2.
    v2 = copy.deepcopy(PAYMENT_AVRO)
    v2["fields"].append({"name": "channel", "type": "string", "default": "web"})
    avro2 = AvroSerializer(client, orjson.dumps(v2).decode())
    later = [{**payment(n, "q"), "channel": "app"} for n in range(4)]
    produce(
        settings, topics["avro"][0], [(f"v2-{n}".encode(), r) for n, r in enumerate(later)], avro2
    )
    out = consume(settings, topics["avro"][1], until=lambda rs: len(rs) >= 16)
    ctx = SerializationContext(topics["avro"][1], MessageField.VALUE)
    evolved = [reader(r.value, ctx) for r in out if (r.key or b"").startswith(b"v2-")]
    assert [e["channel"] for e in evolved] == ["app"] * 4
    assert client.get_versions(f"{topics['avro'][1]}-value") == [1, 2]

    # Bad records, each dead-lettered with its reason, bytes untouched.
    good_id = int.from_bytes(
        avro(records[0], SerializationContext(topics["avro"][0], MessageField.VALUE))[1:5], "big"
    )
    bad = [
        (b"unknown-id", b"\x00\x00\x0f\x42\x3f" + b"\x02ab"),
        (b"bad-payload", b"\x00" + good_id.to_bytes(4, "big") + b"\x02"),
    ]
    produce(settings, topics["avro"][0], bad)
    plain_bad = [
        (b"missing", orjson.dumps({"id": "m", "merchant": {"risk": 1}, "card_present": True})),
        (b"bad-feature", orjson.dumps({**payment(1), "amount": "lots"})),
        (b"numeric-string", orjson.dumps({**payment(1), "amount": " 12.5 "})),
    ]
    produce(settings, topics["plain"][0], plain_bad)
    reasons = _reasons(settings, 4)
    assert reasons == {
        b"unknown-id": "schema_unknown",
        b"bad-payload": "schema_decode",
        b"missing": "missing_feature",
        b"bad-feature": "bad_feature",
    }
    out = consume(settings, topics["plain"][1], until=lambda rs: len(rs) >= 13)
    assert any(r.key == b"numeric-string" for r in out)
    letters = consume(settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= 4)
    assert {r.key: r.value for r in letters}[b"unknown-id"] == bad[0][1]


def _proto_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "note"}


def test_a_refused_route_and_a_registry_outage_dead_letter_nothing_and_resume(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    schema_registry: LocalRegistry,
    fraud: tuple[Path, Any],
    tmp_path: Path,
) -> None:
    path, _model = fraud
    proxy = TcpProxy(schema_registry.port)
    try:
        url = f"http://127.0.0.1:{proxy.port}/apis/ccompat/v7"
        settings, topics = _routed(make_settings, tmp_path, url, ["avro", "held"])
        settings = settings.model_copy(update={"stall_timeout": 3.0})
        client = SchemaRegistryClient({"url": schema_registry.url, "timeout": 30})
        # The held route's output subject holds an unrelated schema and refuses any other.
        held_subject = f"{topics['held'][1]}-value"
        other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
        client.register_schema(held_subject, Schema(orjson.dumps(other).decode(), "AVRO"))
        client.set_compatibility(held_subject, "FULL")
        publish_file(settings, path, "fraud", "1")
        worker = workers(settings)
        worker.wait_ready()
        avro = AvroSerializer(client, orjson.dumps(PAYMENT_AVRO).decode())
        produce(settings, topics["held"][0], [(b"held", payment(2))], avro)

        def not_ready() -> str | None:
            answer = worker.get("/ready")
            return answer.json().get("reason") if answer.status_code == 503 else None

        reason = wait_for(not_ready, 30, "/ready 503 while a route's schema is refused")
        assert f"route to {topics['held'][1]} stalled" in reason
        produce(settings, topics["avro"][0], [(b"before", payment(1))], avro)
        consume(settings, topics["avro"][1], until=lambda rs: len(rs) >= 1)  # the others go on
        client.set_compatibility(held_subject, "NONE")  # the route resumes by itself
        held = consume(settings, topics["held"][1], until=lambda rs: len(rs) >= 1)
        assert [r.key for r in held] == [b"held"]
        wait_for(lambda: worker.get("/ready").status_code == 200, 30, "ready again")

        proxy.cut()  # the worker knows schema 1; a new schema id needs the registry
        v2 = copy.deepcopy(PAYMENT_AVRO)
        v2["fields"].append({"name": "channel", "type": "string", "default": "web"})
        avro2 = AvroSerializer(client, orjson.dumps(v2).decode())
        during = [(f"during-{n}".encode(), {**payment(n), "channel": "x"}) for n in range(5)]
        produce(settings, topics["avro"][0], during, avro2)
        reason = wait_for(not_ready, 30, "/ready 503 while the registry is away")
        assert "schema registry" in reason
        proxy.restore()
        out = consume(settings, topics["avro"][1], until=lambda rs: len(rs) >= 6)
        assert {r.key for r in out} == {b"before", *(k for k, _ in during)}
        wait_for(lambda: worker.get("/ready").status_code == 200, 30, "ready again")
        letters = consume(settings, settings.dead_letter_topic, until=lambda rs: False, timeout=2)
        assert letters == []
    finally:
        proxy.close()


def test_framed_records_on_the_data_topic_need_no_routes_file(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    schema_registry: LocalRegistry,
    fraud: tuple[Path, Any],
) -> None:
    """HOTSWAP_SCHEMA_REGISTRY_URL alone: Avro on the data topic is decoded and scored by the
    default model, a plain JSON record naming its model still is, and a framed record with an
    unknown schema id is dead-lettered with its own reason, its bytes untouched."""
    path, model = fraud
    settings = make_settings(schema_registry_url=schema_registry.url, default_model="fraud")
    publish_file(settings, path, "fraud", "1")
    worker = workers(settings)
    worker.wait_ready()
    client = SchemaRegistryClient({"url": schema_registry.url, "timeout": 30})
    records = [payment(n, prefix="d") for n in range(6)]
    avro = AvroSerializer(client, orjson.dumps(PAYMENT_AVRO).decode())
    produce(settings, settings.data_topic, [(r["id"].encode(), r) for r in records], avro)
    plain = {**payment(7, prefix="j"), "model": "fraud"}
    unknown = b"\x00\x7f\xff\xff\x01" + b"whatever"
    produce(settings, settings.data_topic, [(b"j7", orjson.dumps(plain)), (b"bad", unknown)])

    out = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 7)
    scored = {r.json()["id"]: r.json() for r in out}
    assert set(scored) == {*(r["id"] for r in records), "j7"}
    for record in [*records, plain]:
        assert scored[record["id"]]["model"] == "fraud"
        assert scored[record["id"]]["label"] == expected_label(model, record)
    letters = consume(settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= 1)
    assert [(r.key, r.value, r.headers[HEADER_REASON]) for r in letters] == [
        (b"bad", unknown, b"schema_unknown")
    ]
