"""Kafka plumbing for the benchmarks: the records, loading them, watching and tailing topics.

Every contender gets the same records (scikit-learn's wine rows, keyed by id)
from the same code, and is observed from outside in the same way: the scored
topic's end offsets for throughput, a tailing consumer for latency and swaps.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaPartition

from service.tools.produce import wine_rows

__all__ = [
    "Scored",
    "Tail",
    "jsonable",
    "percentile",
    "preload",
    "record",
    "scored_end",
    "send_at_rate",
    "send_models",
    "stalls",
    "topic_partitions",
]

_ROWS: list[list[float]] = []


def record(i: int, prefix: str) -> tuple[bytes, bytes]:
    """The ``i``-th record: key = id, value = ``{"id", "model": "wine", "features"}``."""
    if not _ROWS:
        _ROWS.extend(wine_rows())
    rid = f"{prefix}-{i}"
    value = orjson.dumps({"id": rid, "model": "wine", "features": _ROWS[i % len(_ROWS)]})
    return rid.encode(), value


async def topic_partitions(client: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    cluster = await client._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def preload(broker: str, topic: str, count: int, prefix: str = "r") -> None:
    """Put ``count`` records in ``topic`` (acknowledged) before a contender starts."""
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = []
        for i in range(count):
            key, value = record(i, prefix)
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def scored_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    """How many records ``tps`` hold: the sum of their end offsets (cheap, no fetch)."""
    return int(sum((await consumer.end_offsets(tps)).values()))


@dataclass(frozen=True)
class Scored:
    """A scored record as seen by the tailing consumer."""

    id: str
    created_ms: int  # the record's Kafka timestamp: set by the contender's producer
    received_ms: float  # when this process got it
    version: str | None  # the ``hotswap-version`` header, when present


@dataclass
class Tail:
    """A group-less consumer of every partition of ``topic``, from its end, on a thread.

    confluent-kafka on a thread of its own, not aiokafka on this event loop: a
    Python client sharing the loop with the sender stalled both for 30-170 ms
    now and then (its own fetch parsing and garbage collections), and those
    stalls were measured as the contender's.
    """

    broker: str
    topic: str
    read_committed: bool = False  # how a consumer of an exactly-once producer reads
    records: list[Scored] = field(default_factory=list)
    _consumer: Consumer | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    async def start(self) -> Tail:
        consumer = Consumer(
            {
                "bootstrap.servers": self.broker,
                "group.id": "bench-tail",  # never joined: partitions are assigned
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "isolation.level": "read_committed" if self.read_committed else "read_uncommitted",
            }
        )
        metadata = await asyncio.to_thread(consumer.list_topics, self.topic, 30)
        partitions = sorted(metadata.topics[self.topic].partitions)
        ends = []
        for p in partitions:
            _, high = await asyncio.to_thread(
                consumer.get_watermark_offsets, KafkaPartition(self.topic, p), 30
            )
            ends.append(KafkaPartition(self.topic, p, high))
        consumer.assign(ends)
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name="bench-tail", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stop.is_set():
            messages = consumer.consume(1000, 0.05)
            now = time.time() * 1000
            for m in messages:
                if m.error() is not None:
                    continue
                version = dict(m.headers() or ()).get("hotswap-version")
                rid = str(orjson.loads(m.value() or b"{}")["id"])
                decoded = version.decode() if isinstance(version, bytes) else version
                self.records.append(Scored(rid, m.timestamp()[1], now, decoded))

    async def until(self, done: Callable[[list[Scored]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.records) and time.monotonic() < deadline:  # noqa: ASYNC110 (a predicate)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._consumer is not None:
            self._consumer.close()


async def send_at_rate(
    broker: str,
    topic: str,
    rate: float,
    seconds: float,
    prefix: str,
    stop: asyncio.Event | None = None,
) -> dict[str, float]:
    """Send records at ``rate``/s for ``seconds`` (or until ``stop``); return id -> send time.

    The send time (ms) is also the record's Kafka timestamp, the one a consumer
    of the contender's output compares its record's timestamp with. A
    confluent-kafka producer on a thread of its own, paced by the clock, so no
    stall of this process's event loop delays a record after it was stamped.
    ``linger.ms`` 1, not 0: with 0 this librdkafka delivered records 1.5-2 s late
    at 2,000/s (measured: p50 1,511 ms against 3.4 ms with 1).
    """
    return await asyncio.to_thread(_send_at_rate, broker, topic, rate, seconds, prefix, stop)


def _send_at_rate(
    broker: str, topic: str, rate: float, seconds: float, prefix: str, stop: asyncio.Event | None
) -> dict[str, float]:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 1, "acks": 1})
    sent: dict[str, float] = {}
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < seconds and not (stop is not None and stop.is_set()):
        key, value = record(i, prefix)
        now_ms = int(time.time() * 1000)
        producer.produce(topic, value, key, timestamp=now_ms)
        sent[key.decode()] = float(now_ms)
        i += 1
        producer.poll(0)
        ahead = i / rate - (time.monotonic() - started)
        if ahead > 0.0005:
            time.sleep(ahead)
    producer.flush(30)
    return sent


def stalls(
    sent: dict[str, float], outputs: list[Scored], apart: float = 0
) -> list[tuple[int, float]]:
    """How long the contender sat on waiting input without writing anything, per gap.

    For each two consecutive outputs (by their timestamps), the time from the
    first input sent after the earlier one to the later one, when such an input
    exists: a gap in the output that is only a gap in the input is no pause.
    Only outputs more than ``apart`` ms apart count (1: two batches, not two
    records of one). Returns (timestamp of the later output, stall ms), in time order.
    """
    inputs = sorted(sent.values())
    stamps = sorted(r.created_ms for r in outputs)
    out: list[tuple[int, float]] = []
    for a, b in itertools.pairwise(stamps):
        if b - a <= apart:
            continue
        j = bisect.bisect_right(inputs, a)
        if j < len(inputs) and inputs[j] < b:
            out.append((b, b - inputs[j]))
    return out


async def send_models(
    broker: str, topic: str, messages: list[tuple[bytes, bytes]], pause: float
) -> list[tuple[float, float]]:
    """Send model messages one at a time; return (send start, acknowledged) times in ms."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker, acks="all", max_request_size=16 * 1024 * 1024
    )
    await producer.start()
    times: list[tuple[float, float]] = []
    try:
        for key, value in messages:
            started = time.time() * 1000
            await producer.send_and_wait(topic, value, key=key)
            times.append((started, time.time() * 1000))
            if pause:
                await asyncio.sleep(pause)
    finally:
        await producer.stop()
    return times


def percentile(values: list[float], q: float) -> float | None:
    """``q``-th percentile (nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return round(ordered[rank], 1)


def jsonable(value: Any) -> Any:
    """Round floats for the results file."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value
