"""The worker's composition root: one Settings in, a running Faust worker out.

Faust is the runtime: it owns the event loop and the signals, supervises the
services, and runs the agents of the design. The **model agent** gets every
model-topic message (from :class:`~service.kafka.model_feed.ModelFeed`) and
validates, builds and swaps; the **rollouts agent** gets every control-topic
message (from a second feed) and begins, promotes or aborts rollouts; the
**scoring agent** gets every fetched batch (from
:class:`~service.kafka.data_feed.DataFeed`), scores it and queues the outputs.
The fleet heartbeat and the decider of automatic promotions run beside them.
The agents read in-memory channels; Faust's own Kafka consumer and
producer are switched off (its per-event stream costs more than scoring, and
its app consumer group would rebalance, pause and clear its queues whenever a
worker joins). A hand-over channel never clears its queue and holds one item,
and each feed sends an item once and awaits its future: an item cannot be
lost or delivered twice, and nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from fastapi import FastAPI
from faust.contrib.asgi import AsgiService

from service.core.control import RolloutControl
from service.core.drift import DriftMonitor
from service.core.inference import DataPlane
from service.core.metrics import Metrics
from service.core.observe import Observer
from service.core.registry import BuildLimits, ModelRegistry
from service.core.routed import RoutedScorer
from service.core.routes import implicit_routes, load_routes
from service.core.scoring import Scorer
from service.core.settings import Settings, unknown_variables
from service.core.signing import ControlVerifier, Verifier, load_public_key
from service.core.swap import Swapper
from service.core.truth import pair_recorder
from service.grpc.server import GrpcServer
from service.http.api import Readiness, create_api
from service.http.quality import create_quality_router
from service.http.rollouts import create_rollout_router
from service.kafka.authz import Denials, principal_of
from service.kafka.batch import Batch
from service.kafka.data_feed import DataFeed
from service.kafka.decider import Decider
from service.kafka.fleet import Fleet
from service.kafka.handover import HandOverChannel, create_app, in_order
from service.kafka.labels_feed import LabelsFeed
from service.kafka.model_feed import ModelFeed, ModelUpdate, TopicsOnce
from service.kafka.publisher import Publisher
from service.kafka.routing import Routing

__all__ = ["WorkerParts", "build_worker", "create_app", "run_worker"]

logger = logging.getLogger(__name__)


@dataclass
class WorkerParts:
    settings: Settings
    app: faust.App
    registry: ModelRegistry
    metrics: Metrics
    models: ModelFeed
    control: ModelFeed  # the control topic of rollouts, read like the model topic
    data: DataFeed
    fleet: Fleet
    decider: Decider
    publisher: Publisher
    api: FastAPI
    http: AsgiService
    grpc: GrpcServer | None  # None when HOTSWAP_GRPC_PORT is 0
    labels: LabelsFeed  # true labels joined to predictions: live quality


def build_worker(settings: Settings) -> WorkerParts:
    """Wire registry, feeds, agents and HTTP API together."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    metrics = Metrics()
    key = load_public_key(settings.verify_key) if settings.verify_key else None
    registry = ModelRegistry(
        limits=BuildLimits.from_settings(settings),  # size, deadline, retries, file roots
        verifier=Verifier(key) if key else None,
    )
    swapper = Swapper(registry, metrics, on_change=lambda: rollouts.model_changed())
    verify_control = ControlVerifier(key) if key else None  # rollouts signed like models
    rollouts = RolloutControl(registry, metrics, swapper.build, verify_control)
    scorer = Scorer(
        registry, max_record_bytes=settings.max_record_bytes, default_model=settings.default_model
    )
    publisher = Publisher(settings, transactional=settings.processing_guarantee == "exactly_once")
    routes = load_routes(settings.routes, settings.written_topics) if settings.routes else None
    if routes is None and settings.schema_registry_url:  # framed records on the data topic
        routes = implicit_routes(settings.data_topic, settings.scored_topic)
    routing = None
    if routes is not None:  # the Schema Registry client is imported only by workers with routes
        from service.kafka.schemas import SchemaCodec, registry_client

        routing = Routing(routes, SchemaCodec(registry_client(settings)))
    score = scorer.score
    if routes is not None:
        publisher.outputs = tuple(routes.outputs)
        score = RoutedScorer(
            scorer,
            routes,
            max_record_bytes=settings.max_record_bytes,
            default_model=settings.default_model,
        ).score
    model_channel = HandOverChannel(app)
    control_channel = HandOverChannel(app)
    batch_channel = HandOverChannel(app)

    @app.agent(model_channel, name="models", concurrency=1)  # type: ignore[misc]
    async def model_agent(updates: Any) -> None:
        """Validate, build (off the loop) and swap each model message, in log order per name."""
        await in_order(updates, lambda u: swapper.submit(u.key, u.value), swapper.settle)

    @app.agent(control_channel, name="rollouts", concurrency=1)  # type: ignore[misc]
    async def control_agent(updates: Any) -> None:
        """Begin, change, promote or abort rollouts, in control-topic order."""
        await in_order(
            updates, lambda u: rollouts.submit(u.key, u.value, replay=u.replay), rollouts.settle
        )

    @app.agent(batch_channel, name="score", concurrency=1)  # type: ignore[misc]
    async def scoring_agent(batches: Any) -> None:
        """Score each batch (one predict call per model); the feed delivers the outputs."""
        async for batch in batches:
            try:
                result = score(batch.records)
                for call in result.calls:
                    label = metrics.model_label(call.model)
                    metrics.scoring_latency.labels(label).observe(call.seconds)
                metrics.batch_size.observe(len(batch.records))
            except Exception as exc:
                if not batch.done.done():
                    batch.done.set_exception(exc)
                continue
            if not batch.done.done():
                batch.done.set_result(result.outputs)

    async def hand_over_model(update: ModelUpdate) -> None:
        await model_channel.put(update)

    async def hand_over_control(update: ModelUpdate) -> None:
        await control_channel.put(update)

    rollouts.resubmit = lambda k, v: hand_over_control(ModelUpdate(k, v, -1, replay=False))

    async def hand_over_batch(batch: Batch) -> None:
        await batch_channel.put(batch)

    denials = Denials(principal_of(settings))  # rights refused right now, named in /ready
    topics = TopicsOnce(settings)  # created if absent by the first feed, once
    models = ModelFeed(settings, hand_over_model, denials=denials, topics=topics)
    control = ModelFeed(
        settings,
        hand_over_control,
        topic=settings.control_topic,
        label="control",
        after=models.replayed,
        denials=denials,
        topics=topics,
    )
    data = DataFeed(
        settings,
        models_replayed=control.replayed,  # the control topic replays after the model topic
        hand_over=hand_over_batch,
        publisher=publisher,
        metrics=metrics,
        on_fenced=lambda: os.kill(os.getpid(), signal.SIGTERM),
        routing=routing,
    )
    data.broker_answers = lambda: models.broker_reachable  # its consumer may be the one stuck

    async def finish_in_flight_batch(sender: Any, *args: Any, **kwargs: Any) -> None:
        swapper.close()  # a model fetch in progress ends now; nothing waits for it
        # Before the agents stop: the last batch completes and commits, the fleet gets a
        # tombstone. Side by side, so a silent broker costs one timeout, not one per feed.
        stops = (data.stop(), decider.stop(), fleet.stop(), control.stop(), models.stop(),
                 labels.stop())  # fmt: skip
        for failed in await asyncio.gather(*stops, return_exceptions=True):
            if isinstance(failed, BaseException):  # each is still given its chance to stop
                logger.error("a feed failed to stop: %r", failed)

    app.on_before_shutdown.connect(finish_in_flight_batch)  # type: ignore[arg-type]

    def readiness() -> Readiness:
        replayed = models.replayed.is_set() and control.replayed.is_set()
        reachable = models.broker_reachable
        stalled = data.progress.stalled()
        metrics.stalled.set(1 if stalled else 0)
        refused = [data.progress.denied, publisher.denied]
        group_refused = ""
        if data.assigned_partitions() == 0:  # a refused group or topic READ: none assigned
            refused.append(data.progress.denied_read)
            group_refused = data.progress.group_refused
        reasons = [
            denials.reason(),
            *(d.as_principal(principal_of(settings)).line() for d in refused if d),
            "" if reachable else "broker unreachable",
            "" if models.replayed.is_set() else "model topic not replayed yet",
            "" if control.replayed.is_set() else "control topic not replayed yet",
            "" if publisher.started or not replayed else "output producer not started",
            stalled or "",
            group_refused,
            (routing.stalled() or "") if routing is not None else "",
            f"crashed: {app._crash_reason}" if app._crash_reason else "",
        ]
        reason = "; ".join(r for r in reasons if r)
        # Reported, not disqualifying: the worker still scores; only the fleet view suffers.
        detail = "; ".join(p for p in (fleet.heartbeat_problem, decider.problem) if p)
        return Readiness(
            ready=not reason,
            broker_reachable=reachable,
            models_replayed=replayed,
            models=len(registry.models()),
            assigned_partitions=data.assigned_partitions(),
            reason=reason,
            detail=detail,
        )

    ready = lambda: readiness().ready  # noqa: E731
    fleet = Fleet(
        settings,
        registry,
        metrics=metrics,
        partitions=data.partitions,
        ready=ready,
        lag=lambda: data.lag.value,
        topics=data.partitions_by_topic,
        lag_by_topic=lambda: data.lag.by_topic,
        denials=denials,
        created=topics,
    )
    decider = Decider(settings, registry, fleet, metrics, partitions=data.partitions)
    plane = DataPlane(registry, metrics, ready, threads=2, max_pending=8)  # HTTP and gRPC
    labels = LabelsFeed(settings, metrics, partitions=data.partitions, after=control.replayed,
                        on_pair=pair_recorder(registry))  # fmt: skip
    drift = DriftMonitor.from_settings(settings, metrics)
    scorer.observer = Observer(sink=labels.record, drift=drift)
    api = create_api(
        registry,
        metrics,
        readiness,
        max_request_bytes=settings.max_request_bytes,
        routers=[
            create_rollout_router(registry, fleet.view),
            create_quality_router(registry, labels.quality, drift.view),
        ],
        plane=plane,
    )
    http = AsgiService(
        api,
        host=settings.http_host,
        port=settings.http_port,
        uvicorn_options={"access_log": False, "log_level": "warning"},
    )
    grpc = GrpcServer.from_settings(settings, plane, metrics)  # None when the port is 0
    feeds = (models, control, data, fleet, decider)
    return WorkerParts(settings, app, registry, metrics, *feeds, publisher, api, http, grpc, labels)


def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM; exits the process."""
    code = serve(settings)
    # Everything that must outlive the process is committed by now. A model build blocked
    # on a slow location runs in a pool thread that Python would join at exit: do not wait.
    logging.shutdown()
    os._exit(code)


def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM and return the exit code (the process is left running)."""
    parts = build_worker(settings)
    servers = [parts.http] if parts.grpc is None else [parts.http, parts.grpc]
    worker = faust.Worker(
        parts.app,
        *servers,
        parts.models,
        parts.control,
        parts.data,
        parts.fleet,
        parts.decider,
        parts.labels,
        loglevel=settings.log_level,
        redirect_stdouts=False,
        quiet=True,
    )
    logger.info(
        "hotswap worker %s (%s): broker %s, data %s -> scored %s, HTTP on :%d, gRPC on :%s",
        settings.worker_id,
        settings.processing_guarantee,
        settings.broker,
        settings.data_topic,
        settings.scored_topic,
        settings.http_port,
        settings.grpc_port or "(off)",
    )
    for variable in unknown_variables(os.environ):
        logger.warning("%s names no setting and is ignored", variable)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0
