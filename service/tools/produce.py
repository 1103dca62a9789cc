"""Demo records from scikit-learn's bundled wine data, produced at a steady rate."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import orjson

from service.core.settings import Settings
from service.kafka.authz import denied_as
from service.kafka.clients import ensure_topics, producer

__all__ = ["produce_records", "wine_classes", "wine_rows"]

logger = logging.getLogger(__name__)


def wine_rows() -> list[list[float]]:
    from sklearn.datasets import load_wine

    return [[float(v) for v in row] for row in load_wine().data]


def wine_classes() -> list[int]:
    """The true class of each of :func:`wine_rows` (what ``--labels`` sends)."""
    from sklearn.datasets import load_wine

    return [int(c) for c in load_wine().target]


async def produce_records(
    settings: Settings,
    *,
    count: int,
    rate: float = 0.0,
    model: str = "wine",
    id_prefix: str | None = None,
    named: bool = False,
    progress: Callable[[int], None] | None = None,
    labels: bool = False,
) -> int:
    """Send ``count`` records (0 = until cancelled) at ``rate`` per second (0 = flat out).

    ``labels``: also send each record's true class to the labels topic, keyed
    like the record, so the workers' live quality has ground truth to join.
    """
    topics = {settings.data_topic, *([settings.labels_topic] if labels else [])}
    await ensure_topics(settings, only=topics)
    rows, classes = wine_rows(), wine_classes()
    names: list[str] | None = None
    if named:
        from sklearn.datasets import load_wine

        names = list(load_wine().feature_names)
    prefix = id_prefix or uuid.uuid4().hex[:8]
    kafka = producer(settings, linger_ms=max(settings.producer_linger_ms, 10))
    sent = 0
    try:
        await kafka.start()
        started = time.monotonic()
        while count == 0 or sent < count:
            row = rows[sent % len(rows)]
            record_id = f"{prefix}-{sent}"
            features: object = dict(zip(names, row)) if names else row
            value = orjson.dumps({"id": record_id, "model": model, "features": features})
            with denied_as("WRITE", settings.data_topic):
                await kafka.send(settings.data_topic, value, key=record_id.encode())
            if labels:
                truth = orjson.dumps({"id": record_id, "label": classes[sent % len(rows)]})
                with denied_as("WRITE", settings.labels_topic):
                    await kafka.send(settings.labels_topic, truth, key=record_id.encode())
            sent += 1
            if progress is not None and sent % 500 == 0:
                progress(sent)
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await kafka.flush()
    finally:
        await kafka.stop()
    return sent
