"""The worker's composition root: build every part from one Settings and run.

Faust's worker owns the event loop and the signals (SIGTERM drains the
in-flight batch, commits and flushes); the model feed, the data feed, the
publisher and the HTTP server run beside the app as services of that worker.
The HTTP server starts at once, not after Faust's recovery, so ``/health``
and ``/ready`` answer even while the broker is away.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from fastapi import FastAPI
from faust.contrib.asgi import AsgiService
from mode import Service

from service.agents import attach_scoring_agent
from service.app import create_app
from service.core.metrics import Metrics
from service.core.registry import BuildLimits, ModelRegistry
from service.core.scoring import Scorer
from service.core.settings import Settings
from service.core.signing import Verifier, load_public_key
from service.http.api import Readiness, create_api
from service.kafka.clients import ensure_topics
from service.kafka.data_feed import DataFeed
from service.kafka.model_feed import ModelFeed
from service.kafka.publisher import Publisher

__all__ = ["BrokerGate", "WorkerParts", "build_worker", "run_worker"]

logger = logging.getLogger(__name__)


@dataclass
class WorkerParts:
    settings: Settings
    app: faust.App
    registry: ModelRegistry
    metrics: Metrics
    feed: ModelFeed
    api: FastAPI
    http: AsgiService
    publisher: Publisher
    data: DataFeed


class BrokerGate(Service):
    """Holds the Faust app back until the broker answers, retrying with backoff.

    Faust's producer gives up at once when no broker answers, and the worker
    would exit; this starts before the app (the worker starts its services in
    order), so a worker started before its broker reports "not ready" over
    HTTP and begins scoring when the broker appears.
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings

    async def on_start(self) -> None:
        delay = 0.5
        while not self.should_stop:
            try:
                await ensure_topics(self._settings, timeout=5.0)
                return
            except (KafkaError, OSError, TimeoutError) as exc:
                logger.warning("broker not reachable (%s); retrying in %.1fs", exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, 10.0)


def build_worker(settings: Settings) -> WorkerParts:
    """Wire registry, model feed, scorer, agent and HTTP API together."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    metrics = Metrics()
    registry = ModelRegistry(
        limits=BuildLimits(
            max_bytes=settings.max_model_bytes, fetch_timeout=settings.fetch_timeout
        ),
        verifier=Verifier(load_public_key(settings.verify_key)) if settings.verify_key else None,
    )
    feed = ModelFeed(settings, registry, metrics)
    scorer = Scorer(
        registry, max_record_bytes=settings.max_record_bytes, default_model=settings.default_model
    )
    publisher = Publisher(settings, metrics)
    channel, listening = app.channel(), asyncio.Event()
    attach_scoring_agent(app, channel, scorer, metrics, publisher, listening)
    data = DataFeed(settings, feed, channel, listening, app.flow_control.is_active)

    async def finish_in_flight_batch(sender: Any, *args: Any, **kwargs: Any) -> None:
        await data.stop()  # before the agent stops: the last batch completes and commits

    app.on_before_shutdown.connect(finish_in_flight_batch)  # type: ignore[arg-type]

    def readiness() -> Readiness:
        replayed = feed.replayed.is_set()
        reachable = feed.broker_reachable
        return Readiness(
            ready=replayed and reachable and not app._crash_reason,
            broker_reachable=reachable,
            models_replayed=replayed,
            models=len(registry.models()),
            assigned_partitions=data.assigned_partitions(),
        )

    api = create_api(registry, metrics, readiness)
    http = AsgiService(
        api,
        host=settings.http_host,
        port=settings.http_port,
        uvicorn_options={"access_log": False, "log_level": "warning"},
    )
    return WorkerParts(settings, app, registry, metrics, feed, api, http, publisher, data)


def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM; exits the process."""
    parts = build_worker(settings)
    worker = faust.Worker(
        parts.app,
        parts.http,
        parts.feed,
        BrokerGate(settings),
        parts.publisher,  # after the gate (needs the broker), stopped after the app
        parts.data,
        loglevel=settings.log_level,
        redirect_stdouts=False,
        quiet=True,
    )
    logger.info(
        "hotswap worker %s: broker %s, data %s -> scored %s, HTTP on :%d",
        settings.app_id,
        settings.broker,
        settings.data_topic,
        settings.scored_topic,
        settings.http_port,
    )
    worker.execute_from_commandline()
