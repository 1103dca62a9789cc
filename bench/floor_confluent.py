"""The floor with confluent-kafka (``python -m bench.floor_confluent``).

The same at-least-once contract as :mod:`bench.floor`, written with
confluent-kafka (librdkafka) instead of aiokafka: one consumer in a consumer
group; per ``consume`` batch: orjson decode, one ONNX Runtime call, the same
scored document, every output produced (key = input key, Java's murmur2
partitioner so records land where aiokafka and hotswap put them), then
``flush`` waits for every acknowledgement (``acks=all``; a failed delivery is
reported by the delivery callback and stops the loop before the commit), then
the batch's offsets are committed synchronously. A crash anywhere before the
commit re-delivers the batch. ONNX Runtime gets one thread, as in hotswap.

librdkafka's calls block, so this loop is plain synchronous Python: there is
no event loop to keep free.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

import numpy as np
import onnxruntime as ort
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from bench.floor import scored_documents

__all__ = ["main", "run"]


class _Deliveries:
    """Delivery reports: only failures are reported (``delivery.report.only.error``)."""

    def __init__(self) -> None:
        self.failed: list[KafkaError] = []

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed.append(error)


def _offsets(messages: list[Message]) -> list[TopicPartition]:
    """The next offset to read, per partition of the batch: what a commit records."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        assert topic is not None
        assert partition is not None
        assert offset is not None
        last[(topic, partition)] = max(offset, last.get((topic, partition), -1))
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _batch(consumer: Consumer, most: int, timeout: float) -> list[Message]:
    """What has arrived, up to ``most``; when nothing has, wait up to ``timeout`` for one.

    aiokafka's ``getmany`` semantics: ``consume(n, timeout)`` alone would wait
    for a full batch, which adds up to ``timeout`` of latency at low rates.
    """
    messages = consumer.consume(most, 0)
    if messages:
        return messages
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]


def run(args: argparse.Namespace) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        args.model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    deliveries = _Deliveries()
    consumer = Consumer(
        {
            "bootstrap.servers": args.broker,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.broker,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "delivery.report.only.error": True,
            "on_delivery": deliveries,
        }
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([args.data_topic])
    try:
        while not stopping:
            messages = _batch(consumer, args.batch, args.timeout_ms / 1000)
            if not messages:
                continue
            for m in messages:
                if m.error() is not None:
                    raise KafkaException(m.error())
            docs = [orjson.loads(m.value() or b"") for m in messages]
            rows = np.asarray([d["features"] for d in docs], dtype=np.float32)
            labels, probabilities = session.run(None, {input_name: rows})
            values = scored_documents(docs, labels, probabilities)
            for m, value in zip(messages, values):
                try:
                    producer.produce(args.scored_topic, value, m.key())
                except BufferError:  # the local queue is full: serve reports, then retry
                    producer.poll(0.1)
                    producer.produce(args.scored_topic, value, m.key())
            if producer.flush(30) != 0:
                raise RuntimeError("outputs not acknowledged within 30 s: not committing")
            if deliveries.failed:
                raise KafkaException(deliveries.failed[0])
            consumer.commit(offsets=_offsets(messages), asynchronous=False)
    finally:
        consumer.close()


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
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
