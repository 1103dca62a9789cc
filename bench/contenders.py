"""The baselines, each run as its own process: ``python -m bench.contenders floor|naive ...``.

- **floor**: what Python can do here with no framework: an aiokafka consumer
  group, one ``getmany`` batch at a time, orjson decode, one ONNX Runtime call,
  one producer batch per partition, wait for acks, commit.
- **naive**: the reference tutorial's design in Faust: one record at a time,
  scikit-learn ``predict`` per record, ``await`` a send per record.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import numpy as np
import orjson

__all__ = ["main"]


async def floor(args: argparse.Namespace, model: bytes) -> None:
    import onnxruntime as ort
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    consumer = AIOKafkaConsumer(
        args.data_topic,
        bootstrap_servers=args.broker,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.broker, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    partitions = sorted(await producer.partitions_for(args.scored_topic))
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=2000)
            messages = [m for ms in batch.values() for m in ms]
            if not messages:
                continue
            docs = [orjson.loads(m.value) for m in messages]
            rows = np.asarray([d["features"] for d in docs], dtype=np.float32)
            labels, probabilities = session.run(None, {input_name: rows})
            builders: dict[int, Any] = {}
            futures = []
            for m, doc, label, proba in zip(
                messages, docs, labels.tolist(), probabilities.tolist()
            ):
                value = orjson.dumps({"id": doc["id"], "label": label, "probabilities": proba})
                p = partitions[(murmur2(m.key) & 0x7FFFFFFF) % len(partitions)]
                builder = builders.get(p) or producer.create_batch()
                if builder.append(key=m.key, value=value, timestamp=None) is None:
                    futures.append(
                        await producer.send_batch(builder, args.scored_topic, partition=p)
                    )
                    builder = producer.create_batch()
                    builder.append(key=m.key, value=value, timestamp=None)
                builders[p] = builder
            for p, builder in builders.items():
                futures.append(await producer.send_batch(builder, args.scored_topic, partition=p))
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def naive(args: argparse.Namespace) -> None:
    import faust
    import joblib

    estimator = joblib.load(args.estimator)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.broker}",
        value_serializer="raw",
        key_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=args.datadir,
        topic_partitions=4,
    )
    source = app.topic(args.data_topic, value_type=bytes, key_type=bytes)
    sink = app.topic(args.scored_topic, value_type=bytes, key_type=bytes)

    @app.agent(source)
    async def score(stream: Any) -> None:
        async for event in stream.events():
            doc = orjson.loads(event.value)
            label = int(estimator.predict([doc["features"]])[0])
            await sink.send(key=event.key, value=orjson.dumps({"id": doc["id"], "label": label}))

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("contender", choices=["floor", "naive"])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--data-topic", required=True)
    parser.add_argument("--scored-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--model", help="ONNX file (floor)")
    parser.add_argument("--estimator", help="joblib file (naive)")
    parser.add_argument("--datadir", default="/tmp")
    args = parser.parse_args(argv)
    if args.contender == "floor":
        with open(args.model, "rb") as f:
            model = f.read()
        asyncio.run(floor(args, model))
    else:
        naive(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
