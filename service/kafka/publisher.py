"""Sending a micro-batch's outputs: one producer batch per partition, all acknowledged.

Building one Kafka batch per partition (aiokafka's ``create_batch``) costs far
less than one ``send`` per record, which is where a per-record design spends
its time. Keys are partitioned like every Kafka client does (murmur2), so a
scored record lands where a consumer keyed on the input would expect it;
records without a key follow their source partition, keeping their order.
The batch is done only when the broker acknowledged every output (``acks=all``);
failed sends are retried, never dropped, because the offsets are committed
right after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from mode import Service

from service.core.metrics import Metrics
from service.core.scoring import DeadLetter, Scored
from service.core.settings import Settings
from service.kafka.clients import producer as make_producer

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)

Output = Scored | DeadLetter


def _append(batch: Any, out: Output) -> bool:
    """Add ``out`` to a producer batch; False when the batch is full."""
    return (
        batch.append(key=out.key, value=out.value, timestamp=None, headers=out.headers) is not None
    )


class Publisher(Service):
    """Owns the producer of scored and dead-letter records."""

    def __init__(self, settings: Settings, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}

    async def on_start(self) -> None:
        self._producer = make_producer(self._settings)
        await self._producer.start()

    async def on_stop(self) -> None:
        if self._producer is not None:
            await self._producer.flush()
            await self._producer.stop()

    async def _partitions_of(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            assert self._producer is not None
            self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return self._partitions[topic]

    async def _route(self, outputs: Sequence[Output]) -> dict[tuple[str, int], list[Output]]:
        """Group outputs by (topic, partition); partition lists are looked up once per call."""
        scored_topic, dead_topic = self._settings.scored_topic, self._settings.dead_letter_topic
        partitions = {t: await self._partitions_of(t) for t in (scored_topic, dead_topic)}
        routes: dict[tuple[str, int], list[Output]] = {}
        for out in outputs:
            topic = scored_topic if isinstance(out, Scored) else dead_topic
            parts = partitions[topic]
            if out.key is None:
                index = max(out.source.partition, 0) % len(parts)
            else:
                index = (murmur2(out.key) & 0x7FFFFFFF) % len(parts)
            routes.setdefault((topic, parts[index]), []).append(out)
        return routes

    async def publish(self, outputs: Sequence[Output]) -> None:
        """Send ``outputs`` and return once the broker has acknowledged all of them."""
        producer = self._producer
        assert producer is not None
        pending: Sequence[Output] = outputs
        delay = 0.2
        while pending:
            sent: list[tuple[list[Output], asyncio.Future[Any]]] = []
            for (topic, partition), outs in (await self._route(pending)).items():
                batch, members = producer.create_batch(), list[Output]()
                for out in outs:
                    if not _append(batch, out):
                        batch.close()  # complete: send now instead of lingering for more
                        future = await producer.send_batch(batch, topic, partition=partition)
                        sent.append((members, future))
                        batch, members = producer.create_batch(), list[Output]()
                        _append(batch, out)
                    members.append(out)
                batch.close()  # nothing else will join it: do not wait out linger_ms
                future = await producer.send_batch(batch, topic, partition=partition)
                sent.append((members, future))
            results = await asyncio.gather(*(fut for _, fut in sent), return_exceptions=True)
            failed = [
                out
                for (members, _), result in zip(sent, results)
                if isinstance(result, BaseException)
                for out in members
            ]
            if failed:
                errors = {type(r).__name__ for r in results if isinstance(r, BaseException)}
                logger.warning(
                    "%d sends failed (%s); retrying in %.1fs", len(failed), errors, delay
                )
                self._partitions.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            pending = failed

    def account(self, outputs: Sequence[Output]) -> None:
        """Update counters and end-to-end latency once outputs are acknowledged."""
        now = time.time()
        scored: dict[tuple[str, str], int] = {}
        dead: dict[str, int] = {}
        latencies: dict[str, list[float]] = {}
        for out in outputs:
            if isinstance(out, Scored):
                scored[(out.model, out.version)] = scored.get((out.model, out.version), 0) + 1
                if out.source.timestamp:
                    latencies.setdefault(out.model, []).append(now - out.source.timestamp)
            else:
                dead[out.reason] = dead.get(out.reason, 0) + 1
        for (model, version), n in scored.items():
            self._metrics.records_scored.labels(model, version).inc(n)
        for reason, n in dead.items():
            self._metrics.records_dead_lettered.labels(reason).inc(n)
        for model, values in latencies.items():
            histogram = self._metrics.end_to_end_latency.labels(model)
            for value in values:
                histogram.observe(max(0.0, value))
