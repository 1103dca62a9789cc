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
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

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
    """A group-less consumer of every partition of ``topic``, from its end, in the background."""

    broker: str
    topic: str
    read_committed: bool = False  # how a consumer of an exactly-once producer reads
    records: list[Scored] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> Tail:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.broker,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            isolation_level="read_committed" if self.read_committed else "read_uncommitted",
        )
        await self._consumer.start()
        tps = await topic_partitions(self._consumer, self.topic)
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end positions now, not at the first fetch
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time() * 1000
            for messages in batch.values():
                for m in messages:
                    version = dict(m.headers).get("hotswap-version")
                    rid = str(orjson.loads(m.value)["id"])
                    decoded = version.decode() if version is not None else None
                    self.records.append(Scored(rid, m.timestamp, now, decoded))

    async def until(self, done: Callable[[list[Scored]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.records) and time.monotonic() < deadline:  # noqa: ASYNC110 (a predicate)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


async def send_at_rate(
    broker: str,
    topic: str,
    rate: float,
    seconds: float,
    prefix: str,
    stop: asyncio.Event | None = None,
) -> dict[str, float]:
    """Send records at ``rate``/s for ``seconds`` (or until ``stop``); return id -> send time.

    The send time (ms) is also the record's Kafka timestamp, the one the
    contender's scored record is compared with. The sender runs in a process of
    its own: sharing this one's event loop (and its garbage collections) with
    the tailing consumer, it stalled for 30-170 ms now and then, and every
    record stamped before such a stall reached the broker late, which was
    measured as the contender's latency.
    """
    context = multiprocessing.get_context("spawn")
    halt = context.Event()
    receive, give = context.Pipe(duplex=False)
    args = (broker, topic, rate, seconds, prefix, halt, give)
    process = context.Process(target=_send_in_process, args=args, daemon=True)
    process.start()
    give.close()
    try:
        while not await asyncio.to_thread(receive.poll, 0.05):
            if stop is not None and stop.is_set():
                halt.set()
            if not process.is_alive() and not receive.poll():
                raise RuntimeError(f"the sender process exited with {process.exitcode}")
        sent: dict[str, float] = receive.recv()
    finally:
        halt.set()
        await asyncio.to_thread(process.join, 30)
    return sent


def _send_in_process(
    broker: str, topic: str, rate: float, seconds: float, prefix: str, halt: Any, give: Any
) -> None:
    give.send(asyncio.run(_send(broker, topic, rate, seconds, prefix, halt)))
    give.close()


async def _send(
    broker: str, topic: str, rate: float, seconds: float, prefix: str, halt: Any
) -> dict[str, float]:
    """``linger_ms=0`` so a record leaves at once: its latency is the contender's, not ours."""
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=0, acks=1)
    await producer.start()
    record(0, prefix)  # load the rows before the clock starts
    sent: dict[str, float] = {}
    started = time.monotonic()
    try:
        i = 0
        while time.monotonic() - started < seconds and not halt.is_set():
            key, value = record(i, prefix)
            now_ms = time.time() * 1000
            await producer.send(topic, value, key=key, timestamp_ms=int(now_ms))
            sent[key.decode()] = float(int(now_ms))
            i += 1
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
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
