"""The scoring agent: a thin Kafka adapter around :class:`service.scoring.Scorer`.

Per micro-batch (``stream.take_events``): score, send every output, and wait
until the broker has acknowledged all of them before the loop body returns,
because Faust acks (and later commits) the batch's offsets right after. A
crash anywhere before that redelivers the batch: at-least-once, never lost.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from service.metrics import Metrics
from service.model_feed import ModelFeed
from service.publisher import Publisher
from service.scoring import InputRecord, Scorer
from service.settings import Settings

__all__ = ["attach_scoring_agent"]

logger = logging.getLogger(__name__)


def attach_scoring_agent(
    app: faust.App,
    topic: Any,
    settings: Settings,
    scorer: Scorer,
    feed: ModelFeed,
    metrics: Metrics,
    publisher: Publisher,
) -> Any:
    """Register the scoring agent on ``app``; it waits for the model replay first."""

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
