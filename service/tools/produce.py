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

__all__ = ["produce_records", "wine_rows"]

logger = logging.getLogger(__name__)


def wine_rows() -> list[list[float]]:
    from sklearn.datasets import load_wine

    return [[float(v) for v in row] for row in load_wine().data]


async def produce_records(
    settings: Settings,
    *,
    count: int,
    rate: float = 0.0,
    model: str = "wine",
    id_prefix: str | None = None,
    named: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``count`` records (0 = until cancelled) at ``rate`` per second (0 = flat out)."""
    await ensure_topics(settings, only={settings.data_topic})
    rows = wine_rows()
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
