"""The demo's second stream: Avro payments scored in enrich mode by a fraud model.

A real Schema Registry (Apicurio, ``scripts/localregistry.py``), a ``payments`` topic of
Avro records in the Confluent wire format, a ``payments`` model whose ``feature_names`` are
the record's own fields (``merchant.risk`` is nested), and a route writing each payment,
unchanged, plus its ``prediction`` to ``payments.scored`` under a derived Avro schema.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from models.train import payment_record, train_payments
from service.core.settings import Settings

__all__ = ["PAYMENT_AVRO", "PaymentStream", "write_routes"]

PAYMENT_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "namespace": "demo",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "currency", "type": "string"},
        {
            "name": "merchant",
            "type": {
                "type": "record",
                "name": "Merchant",
                "fields": [{"name": "name", "type": "string"}, {"name": "risk", "type": "double"}],
            },
        },
        {"name": "card_present", "type": "boolean"},
        {"name": "hour", "type": "int"},
    ],
}


def write_routes(path: Path, data_topic: str, scored_topic: str) -> Path:
    """Wine envelopes as before, and payments enriched."""
    routes = [
        {"topic": data_topic, "model": "wine", "output": scored_topic, "mode": "envelope"},
        {"topic": "payments", "model": "payments", "output": "payments.scored", "mode": "enrich"},
    ]
    path.write_text(yaml.safe_dump({"routes": routes}, sort_keys=False))
    return path


class PaymentStream:
    """Creates the topic, trains and publishes the model, and sends payments at a rate."""

    def __init__(self, settings: Settings, env: dict[str, str], models: Path) -> None:
        self._settings = settings
        self._servers = ",".join(settings.bootstrap_servers)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.enriched: dict[str, Any] | None = None  # one output, read back in the background
        admin = AdminClient({"bootstrap.servers": self._servers})
        for future in admin.create_topics([NewTopic("payments", 4, 1)]).values():
            try:
                future.result(30)
            except Exception as exc:  # already there from an earlier run
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        path = train_payments(models)
        subprocess.run(
            [sys.executable, "-m", "service", "publish", str(path), "--name", "payments",
             "--version", "1", "--description", "fraud (demo)"],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._client = SchemaRegistryClient({"url": settings.schema_registry_url, "timeout": 10})

    def start(self, rate: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(rate,), daemon=True)
        self._thread.start()

    def _run(self, rate: float) -> None:
        serialize = AvroSerializer(self._client, orjson.dumps(PAYMENT_AVRO).decode())
        ctx = SerializationContext("payments", MessageField.VALUE)
        producer = Producer({"bootstrap.servers": self._servers, "linger.ms": 20})
        rng = np.random.default_rng(1)
        while not self._stop.wait(1 / rate):
            record = payment_record(rng, self.sent)
            producer.produce("payments", serialize(record, ctx), record["id"].encode())
            producer.poll(0)
            self.sent += 1
            if self.enriched is None and self.sent % 100 == 0:  # not on the demo's main loop
                producer.flush(5)
                self.enriched = self.sample()
        producer.flush(5)

    def sample(self) -> dict[str, Any] | None:
        """One enriched payment, read back with the registry alone."""
        consumer = Consumer({"bootstrap.servers": self._servers, "group.id": "demo-reader",
                             "enable.auto.commit": False})  # fmt: skip
        try:
            consumer.assign([TopicPartition("payments.scored", p, 0) for p in range(4)])
            message = consumer.poll(5)
            if message is None or message.error() is not None:
                return None
            ctx = SerializationContext("payments.scored", MessageField.VALUE)
            return AvroDeserializer(self._client)(message.value(), ctx)  # type: ignore[no-any-return]
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
