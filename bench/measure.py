"""Measuring tools: process CPU and memory from /proc, topic offsets, timed streams."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

__all__ = ["ProcStats", "RateStream", "preload", "read_scored", "scored_count"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_WINE = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]
ROWS = [[v * (1 + (i % 7) / 50) for v in _WINE] for i in range(64)]


@dataclass
class ProcStats:
    """CPU seconds and memory of a process tree, read from /proc."""

    pid: int

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            children = Path(f"/proc/{pid}/task/{pid}/children")
            if children.exists():
                todo += [int(c) for c in children.read_text().split()]
        return pids

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self._tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / CLOCK_TICKS

    def _status_kb(self, key: str) -> int:
        total = 0
        for pid in self._tree():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def peak_rss_mb(self) -> float:
        return self._status_kb("VmHWM") / 1024

    def rss_mb(self) -> float:
        return self._status_kb("VmRSS") / 1024


def _record(i: int, prefix: str) -> tuple[bytes, bytes]:
    rid = f"{prefix}-{i}"
    return rid.encode(), orjson.dumps({"id": rid, "model": "wine", "features": ROWS[i % 64]})


async def _preload(broker: str, topic: str, count: int, prefix: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = []
        for i in range(count):
            key, value = _record(i, prefix)
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def preload(broker: str, topic: str, count: int, prefix: str = "r") -> None:
    """Put ``count`` records in ``topic`` before a contender starts."""
    asyncio.run(_preload(broker, topic, count, prefix))


async def _count(broker: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(tps)).values()) if tps else 0
    finally:
        await consumer.stop()


def scored_count(broker: str, topic: str) -> int:
    return asyncio.run(_count(broker, topic))


@dataclass(eq=False)
class RateStream(threading.Thread):
    """Sends records at a fixed rate; remembers when each was sent (ms since the epoch)."""

    broker: str
    topic: str
    rate: float
    seconds: float
    prefix: str = "s"
    sent_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.broker, linger_ms=0, acks=1)
        await producer.start()
        started = time.monotonic()
        try:
            i = 0
            while time.monotonic() - started < self.seconds:
                key, value = _record(i, self.prefix)
                now_ms = time.time() * 1000
                await producer.send(self.topic, value, key=key, timestamp_ms=int(now_ms))
                self.sent_ms[key.decode()] = now_ms
                i += 1
                ahead = i / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await producer.flush()
        finally:
            await producer.stop()


@dataclass(frozen=True)
class ScoredRecord:
    id: str
    timestamp_ms: int
    version: str | None


async def _read(broker: str, topic: str, want: int, timeout: float) -> list[ScoredRecord]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    out: list[ScoredRecord] = []
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                for m in messages:
                    version = dict(m.headers).get("hotswap-version")
                    out.append(
                        ScoredRecord(
                            orjson.loads(m.value)["id"],
                            m.timestamp,
                            version.decode() if version else None,
                        )
                    )
    finally:
        await consumer.stop()
    return out


def read_scored(broker: str, topic: str, want: int, timeout: float = 60) -> list[ScoredRecord]:
    """Every scored record (id, Kafka timestamp, model version) up to ``want``."""
    return asyncio.run(_read(broker, topic, want, timeout))
