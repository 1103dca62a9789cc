"""The floor: what plain Python does here with no framework (``python -m bench.floor``).

One aiokafka consumer in a consumer group; per ``getmany`` batch: orjson
decode, one ONNX Runtime call, the same scored document hotswap writes (id,
model, version, label, probabilities, scored_at), one producer batch per
partition, wait for every acknowledgement (``acks=all``), commit. It skips what
hotswap adds on purpose (validation, dead letters, headers, metrics, HTTP,
hot swap), so hotswap / floor is the price of those. Each producer batch is
closed before ``send_batch``: aiokafka lets an open batch linger ``linger_ms``
(5 ms here, as in hotswap) for records that will never come, once per batch
(``--keep-open`` shows the difference). ONNX Runtime gets one thread, as in
hotswap's registry.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

__all__ = ["main", "run", "scored_documents"]


def scored_documents(docs: list[dict[str, Any]], labels: Any, probabilities: Any) -> list[bytes]:
    """The document hotswap writes for each scored record (shared by both floors)."""
    scored_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    return [
        orjson.dumps(
            {
                "id": doc.get("id"),
                "model": "wine",
                "version": "1",
                "label": label,
                "probabilities": {str(c): p for c, p in enumerate(proba)},
                "scored_at": scored_at,
            }
        )
        for doc, label, proba in zip(docs, labels.tolist(), probabilities.tolist())
    ]


async def _send(
    producer: AIOKafkaProducer,
    topic: str,
    partitions: list[int],
    items: list[tuple[bytes, bytes]],
    close: bool,
) -> None:
    """One producer batch per partition (a new one when full); wait for every ack."""
    builders: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for key, value in items:
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        builder = builders.get(partition)
        if builder is None:
            builder = builders[partition] = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:  # full
            if close:
                builder.close()  # complete: send now, do not linger
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            builder = builders[partition] = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None)
    for partition, builder in builders.items():
        if close:
            builder.close()
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    await asyncio.gather(*futures)


async def run(args: argparse.Namespace) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        args.model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    consumer = AIOKafkaConsumer(
        args.data_topic,
        bootstrap_servers=args.broker,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=args.batch,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.broker, acks="all", linger_ms=5)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    await producer.start()
    partitions = sorted(await producer.partitions_for(args.scored_topic))
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=args.timeout_ms, max_records=args.batch)
            messages = [m for batch in fetched.values() for m in batch]
            if not messages:
                continue
            docs = [orjson.loads(m.value) for m in messages]
            rows = np.asarray([d["features"] for d in docs], dtype=np.float32)
            labels, probabilities = session.run(None, {input_name: rows})
            values = scored_documents(docs, labels, probabilities)
            await _send(
                producer,
                args.scored_topic,
                partitions,
                [(m.key, v) for m, v in zip(messages, values)],
                close=not args.keep_open,
            )
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--data-topic", required=True)
    parser.add_argument("--scored-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--model", required=True, help="the ONNX file hotswap serves")
    parser.add_argument("--batch", type=int, default=2000, help="as HOTSWAP_BATCH_SIZE")
    parser.add_argument("--timeout-ms", type=int, default=20, help="as HOTSWAP_BATCH_TIMEOUT")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--keep-open", action="store_true", help="let producer batches linger")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
