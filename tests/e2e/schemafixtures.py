"""Helpers of the Schema Registry tests: a small fraud model, routes, serializers, a proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from sklearn.linear_model import LogisticRegression

from service.core.settings import Settings

__all__ = [
    "FEATURES",
    "PAYMENT_AVRO",
    "TcpProxy",
    "create_topics",
    "payment",
    "payment_proto_class",
    "produce",
    "train_fraud",
    "write_routes",
]

FEATURES = ["amount", "merchant.risk", "card_present"]

PAYMENT_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "double"},
        {
            "name": "merchant",
            "type": {
                "type": "record",
                "name": "Merchant",
                "fields": [{"name": "name", "type": "string"}, {"name": "risk", "type": "float"}],
            },
        },
        {"name": "card_present", "type": "boolean"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def train_fraud(out: Path) -> tuple[Path, LogisticRegression]:
    """A logistic regression on three features with clear margins, and its sidecar."""
    rng = np.random.default_rng(7)
    amount = np.concatenate([rng.uniform(1, 60, 200), rng.uniform(300, 900, 200)])
    risk = rng.uniform(0, 1, 400)
    card = rng.integers(0, 2, 400).astype(float)
    x = np.column_stack([amount, risk, card]).astype(np.float32)
    y = (amount > 150).astype(int)
    model = LogisticRegression(max_iter=2000).fit(x, y)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fraud.joblib"
    joblib.dump(model, path)
    meta = {"feature_names": FEATURES, "sample_rows": x[::25].tolist()}
    (out / "fraud.meta.json").write_bytes(orjson.dumps(meta))
    return path, model


def payment(n: int, prefix: str = "p") -> dict[str, Any]:
    """Record ``n``: small amounts are legitimate (0), large ones fraud (1)."""
    return {
        "id": f"{prefix}{n}",
        "amount": float(10 + n) if n % 2 else float(400 + n),
        "merchant": {"name": f"m{n % 3}", "risk": 0.25 * (n % 4)},
        "card_present": n % 3 == 0,
        "note": None if n % 5 else "five",
    }


def expected_label(model: LogisticRegression, record: dict[str, Any]) -> int:
    row = [[record["amount"], record["merchant"]["risk"], float(record["card_present"])]]
    return int(model.predict(np.asarray(row, dtype=np.float32))[0])


def write_routes(path: Path, routes: list[dict[str, str]]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"routes": routes}))
    return path


def create_topics(settings: Settings, topics: list[str], partitions: int = 2) -> None:
    admin = AdminClient({"bootstrap.servers": ",".join(settings.bootstrap_servers)})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for future in futures.values():
        future.result(30)


def produce(
    settings: Settings,
    topic: str,
    values: list[tuple[bytes, Any]],
    serialize: Callable[[Any, SerializationContext], bytes] | None = None,
) -> None:
    """Send (key, value) pairs; ``serialize`` frames the values (None: bytes as they are)."""
    producer = Producer({"bootstrap.servers": ",".join(settings.bootstrap_servers)})
    ctx = SerializationContext(topic, MessageField.VALUE)
    for key, value in values:
        producer.produce(topic, serialize(value, ctx) if serialize else value, key)
    assert producer.flush(30) == 0


def payment_proto_class() -> Any:
    """``shop.Payment`` as a Protobuf class built at run time (no protoc)."""
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="payment.proto", package="shop", syntax="proto3")
    merchant = descriptor_pb2.DescriptorProto(name="Merchant")
    merchant.field.add(name="name", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    merchant.field.add(name="risk", number=2, type=f.TYPE_FLOAT, label=f.LABEL_OPTIONAL)
    message = fdp.message_type.add(name="Payment")
    message.field.add(name="id", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    message.field.add(name="amount", number=2, type=f.TYPE_DOUBLE, label=f.LABEL_OPTIONAL)
    message.field.add(
        name="merchant", number=3, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
        type_name=".shop.Merchant",
    )  # fmt: skip
    message.field.add(name="card_present", number=4, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    fdp.message_type.append(merchant)
    pool = DescriptorPool()
    pool.Add(fdp)
    return GetMessageClass(pool.FindMessageTypeByName("shop.Payment"))


def subject_versions(client: SchemaRegistryClient, subject: str) -> list[int]:
    return list(client.get_versions(subject))


class TcpProxy:
    """A TCP relay to the registry that a test can cut (connections refused) and restore:
    the registry process keeps its schemas while the worker cannot reach it."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.open = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self._server.close()
