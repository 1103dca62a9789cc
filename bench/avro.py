"""The Avro path (``python -m bench.avro``): hotswap in enrich mode beside a raw loop.

One run, one broker, one Schema Registry (Apicurio), the demo's payments model and
the same records: Avro payments in the Confluent wire format, preloaded. Three
contenders each read all of them and write one output per record:

- ``hotswap_avro``: a worker with a route in enrich mode (decode with the registry's
  schema, score, write the record plus ``prediction`` under a derived schema);
- ``raw_avro``: a plain confluent-kafka + fastavro loop doing the same job (decode
  each record, one ONNX call per batch, encode the enriched record with the derived
  schema, produce, flush, commit), at least once;
- ``hotswap_json``: a worker on hotswap's own JSON envelope (the same features).

Rates count from the first output to the last (start-up excluded). Prints the ratios
the issue asks for: hotswap Avro over the raw loop, and over hotswap's JSON path.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import onnxruntime as ort
import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from models.train import payment_record, train_payments
from scripts.demo_payments import PAYMENT_AVRO
from scripts.harness import WorkerProcess, isolated_settings, publish_file
from scripts.localkafka import LocalKafka, fetch, free_port
from scripts.localregistry import LocalRegistry
from scripts.localregistry import fetch as fetch_registry
from service.core.convert import sklearn_to_onnx
from service.kafka.derived import PREDICTION_AVRO

__all__ = ["main"]


def _topics(broker: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(n, 4, 1) for n in names]).values():
        future.result(30)


def _load(broker: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 20})
    for key, value in values:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def _end(consumer: Consumer, topic: str) -> int:
    return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), 5)[1] for p in range(4))


def _rate(broker: str, topic: str, count: int, timeout: float = 600) -> float:
    """Records per second from the first output on ``topic`` to the ``count``-th."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "bench-avro-watch"})
    try:
        deadline = time.monotonic() + timeout
        while (first := _end(consumer, topic)) == 0:
            assert time.monotonic() < deadline, f"no output on {topic}"
            time.sleep(0.01)
        started = time.monotonic()
        while (done := _end(consumer, topic)) < count:
            assert time.monotonic() < deadline, f"{done} of {count} outputs on {topic}"
            time.sleep(0.02)
        return (done - first) / max(time.monotonic() - started, 1e-6)
    finally:
        consumer.close()


def _raw_loop(broker: str, source: str, output: str, onnx: bytes, registry: str) -> None:
    """The raw confluent-kafka + fastavro loop: decode, score, encode, produce, commit."""
    client = SchemaRegistryClient({"url": registry, "timeout": 30})
    field = {"name": "prediction", "type": PREDICTION_AVRO}
    derived = {**PAYMENT_AVRO, "fields": [*PAYMENT_AVRO["fields"], field]}
    out_id = client.register_schema(
        f"{output}-value", Schema(orjson.dumps(derived).decode(), "AVRO")
    )
    writer = fastavro.parse_schema(derived)
    prefix = b"\0" + out_id.to_bytes(4, "big")
    readers: dict[int, Any] = {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "bench-raw-avro",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5, "acks": "all"})
    consumer.subscribe([source])
    idle = 0
    while idle < 50:
        messages = consumer.consume(2000, 0.1)
        if not messages:
            idle += 1
            continue
        idle = 0
        docs: list[Any] = []
        for m in messages:
            value: Any = m.value()
            sid = int.from_bytes(value[1:5], "big")
            if sid not in readers:
                readers[sid] = fastavro.parse_schema(
                    orjson.loads(client.get_schema(sid).schema_str or "")
                )
            docs.append(fastavro.schemaless_reader(io.BytesIO(value[5:]), readers[sid], None))
        rows = np.asarray(
            [
                [d["amount"], d["merchant"]["risk"], float(d["card_present"]), d["hour"]]
                for d in docs
            ],
            dtype=np.float32,
        )
        label, probabilities = session.run(None, {session.get_inputs()[0].name: rows})
        for m, d, lb, pr in zip(messages, docs, label.tolist(), probabilities.tolist()):
            d["prediction"] = {"model": "payments", "version": "1", "label": lb,
                               "probabilities": {"0": pr[0], "1": pr[1]}}  # fmt: skip
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, writer, d)
            producer.produce(output, prefix + buffer.getvalue(), m.key())
        producer.flush()
        consumer.commit(asynchronous=False)
    consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    n = args.records
    fetch()
    fetch_registry()
    with tempfile.TemporaryDirectory(prefix="bench-avro-") as tmp:
        work = Path(tmp)
        with LocalKafka(free_port(), work / "kafka") as kafka, LocalRegistry(free_port()) as reg:
            broker = kafka.bootstrap
            client = SchemaRegistryClient({"url": reg.url, "timeout": 30})
            model_path = train_payments(work / "models")
            import joblib

            rng = np.random.default_rng(3)
            records = [payment_record(rng, i) for i in range(n)]
            rows = np.asarray([[r["amount"], r["merchant"]["risk"], float(r["card_present"]),
                                r["hour"]] for r in records], dtype=np.float32)  # fmt: skip
            onnx = sklearn_to_onnx(joblib.load(model_path), rows[:32]).onnx
            serialize = AvroSerializer(client, orjson.dumps(PAYMENT_AVRO).decode())
            ctx = SerializationContext("bench.payments", MessageField.VALUE)
            avro = [(r["id"].encode(), serialize(r, ctx)) for r in records]
            envelopes = [
                (r["id"].encode(), orjson.dumps({"id": r["id"], "model": "payments",
                                                 "features": row.tolist()}))
                for r, row in zip(records, rows)
            ]  # fmt: skip
            _topics(broker, ["bench.payments", "bench.raw.out", "bench.json"])
            _load(broker, "bench.payments", avro)
            _load(broker, "bench.json", envelopes)
            rates: dict[str, float] = {}

            raw = threading.Thread(
                target=_raw_loop, args=(broker, "bench.payments", "bench.raw.out", onnx, reg.url)
            )
            raw.start()
            rates["raw_avro"] = _rate(broker, "bench.raw.out", n)
            raw.join()

            routes = work / "routes.yaml"
            routes.write_text(yaml.safe_dump({"routes": [
                {"topic": "bench.payments", "model": "payments", "output": "bench.enriched",
                 "mode": "enrich"}]}))  # fmt: skip
            for name, extra in (
                ("hotswap_avro", {"routes": str(routes), "schema_registry_url": reg.url}),
                ("hotswap_json", {"data_topic": "bench.json"}),
            ):
                settings = isolated_settings(broker, work, name, log_level="WARNING", **extra)
                publish_file(settings, model_path, "payments", "1")
                worker = WorkerProcess(settings, work / f"{name}.log").start()
                try:
                    worker.wait_ready(120)
                    out = "bench.enriched" if name == "hotswap_avro" else settings.scored_topic
                    rates[name] = _rate(broker, out, n)
                finally:
                    worker.stop(30)
    for name, rate in rates.items():
        print(f"{name:>14}: {rate:10,.0f} records/s")
    mine, floor, envelope = rates["hotswap_avro"], rates["raw_avro"], rates["hotswap_json"]
    print(f"hotswap Avro / raw Avro loop:  {mine / floor:.2f}x (goal >= 1.0)")
    print(f"hotswap Avro / hotswap JSON:   {mine / envelope:.2f}x (goal >= 0.7)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
