"""The scoring agent: a thin Faust adapter around :class:`service.core.scoring.Scorer`.

Each event is a whole batch from :class:`service.kafka.data_feed.DataFeed`: score it
(one predict call per model), send every output, wait for the broker to
acknowledge all of them, then resolve the batch so its offsets get committed.
Nothing escapes the agent: a failure is handed back to the feed, which reads
the batch again (at-least-once), instead of crashing the actor and losing it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from service.core.metrics import Metrics
from service.core.scoring import Scorer
from service.kafka.data_feed import Batch
from service.kafka.publisher import Publisher

__all__ = ["attach_scoring_agent"]

logger = logging.getLogger(__name__)


def attach_scoring_agent(
    app: faust.App,
    channel: Any,
    scorer: Scorer,
    metrics: Metrics,
    publisher: Publisher,
    listening: asyncio.Event,
) -> Any:
    """Register the scoring agent on ``app``, reading batches from ``channel``.

    ``listening`` is set once the agent's stream exists: a batch sent to the
    channel before that would have no reader.
    """

    async def score(stream: Any) -> None:
        listening.set()
        async for batch in stream:
            if batch.taken:  # delivered again after a flow-control hiccup: already handled
                continue
            batch.taken = True
            await _score(batch)

    async def _score(batch: Batch) -> None:
        try:
            result = scorer.score(batch.records)
            for call in result.calls:
                metrics.scoring_latency.labels(call.model).observe(call.seconds)
            metrics.batch_size.observe(len(batch.records))
            await publisher.publish(result.outputs)
            publisher.account(result.outputs)
        except asyncio.CancelledError:
            batch.done.cancel()
            raise
        except Exception as exc:
            logger.exception("scoring a batch failed")
            if not batch.done.done():
                batch.done.set_exception(exc)
            return
        if not batch.done.done():
            batch.done.set_result(None)

    return app.agent(channel, name="score", concurrency=1)(score)
