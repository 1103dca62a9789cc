"""The scoring agent: a thin Kafka adapter around :class:`service.scoring.Scorer`.

Per micro-batch (``stream.take_events``): score, send every output, and wait
until the broker has acknowledged all of them before the loop body returns,
because Faust acks (and later commits) the batch's offsets right after. A
crash anywhere before that redelivers the batch: at-least-once, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import faust

from service.metrics import Metrics
from service.model_feed import ModelFeed
from service.scoring import DeadLetter, InputRecord, Scored, Scorer
from service.settings import Settings

__all__ = ["Publisher", "attach_scoring_agent"]

logger = logging.getLogger(__name__)


class Publisher:
    """Sends a batch's outputs and waits for every acknowledgement, retrying failures."""

    def __init__(self, app: faust.App, settings: Settings, metrics: Metrics) -> None:
        self._app = app
        self._scored_topic = settings.scored_topic
        self._dlq_topic = settings.dead_letter_topic
        self._metrics = metrics

    async def publish(self, outputs: list[Scored | DeadLetter]) -> None:
        pending = outputs
        delay = 0.2
        while pending:
            futures: list[Awaitable[Any]] = []
            for out in pending:
                topic = self._scored_topic if isinstance(out, Scored) else self._dlq_topic
                fut = await self._app.producer.send(
                    topic, out.key, out.value, None, None, out.headers
                )
                futures.append(fut)
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [o for o, r in zip(pending, results) if isinstance(r, BaseException)]
            if failed:
                logger.warning("%d sends failed; retrying in %.1fs", len(failed), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            pending = failed

    def account(self, outputs: list[Scored | DeadLetter]) -> None:
        """Update counters and end-to-end latency once outputs are acknowledged."""
        now = time.time()
        scored: dict[tuple[str, str], int] = {}
        dead: dict[str, int] = {}
        e2e = self._metrics.end_to_end_latency
        for out in outputs:
            if isinstance(out, Scored):
                scored[(out.model, out.version)] = scored.get((out.model, out.version), 0) + 1
                if out.source.timestamp:
                    e2e.labels(out.model).observe(max(0.0, now - out.source.timestamp))
            else:
                dead[out.reason] = dead.get(out.reason, 0) + 1
        for (model, version), n in scored.items():
            self._metrics.records_scored.labels(model, version).inc(n)
        for reason, n in dead.items():
            self._metrics.records_dead_lettered.labels(reason).inc(n)


def attach_scoring_agent(
    app: faust.App,
    topic: Any,
    settings: Settings,
    scorer: Scorer,
    feed: ModelFeed,
    metrics: Metrics,
) -> Any:
    """Register the scoring agent on ``app``; it waits for the model replay first."""
    publisher = Publisher(app, settings, metrics)

    async def score(stream: Any) -> None:
        if not feed.replayed.is_set():
            logger.info("scoring waits for the model topic to be replayed")
            await feed.replayed.wait()
        batches = stream.take_events(settings.batch_size, within=settings.batch_timeout)
        async for events in batches:
            records = [
                InputRecord(
                    key=e.message.key,
                    value=e.message.value,
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    timestamp=e.message.timestamp,
                )
                for e in events
            ]
            result = scorer.score(records)
            for call in result.calls:
                metrics.scoring_latency.labels(call.model).observe(call.seconds)
            metrics.batch_size.observe(len(records))
            await publisher.publish(result.outputs)
            publisher.account(result.outputs)

    return app.agent(topic, name="score", concurrency=1)(score)
