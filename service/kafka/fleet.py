"""The fleet: every worker heartbeats to the status topic and reads everyone else's.

Every ``HEARTBEAT`` seconds a worker writes its :class:`WorkerStatus` (key =
its worker id) to the compacted status topic: what it serves, where its
rollouts stand (with their figures, so the decider can total them), which
data partitions it holds. It reads the same topic with a group-less
:class:`~service.kafka.model_feed.ModelFeed` (replay, then tail), so
``GET /fleet`` on any worker lists the live workers of its group: those heard
from within ``LIVE_WINDOW`` seconds. A clean stop writes a tombstone, so the
worker drops out at once; a killed one drops out after the window.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException, Producer
from mode import Service

from service.core.fleet import fleet_view, live_workers
from service.core.registry import ModelRegistry
from service.core.rollout_messages import WorkerStatus, parse_worker_status
from service.core.settings import Settings
from service.kafka.authz import Denials
from service.kafka.clients import rdkafka_config
from service.kafka.model_feed import ModelFeed, ModelUpdate
from service.kafka.threads import bounded

__all__ = ["HEARTBEAT", "LIVE_WINDOW", "Fleet"]

logger = logging.getLogger(__name__)

HEARTBEAT = 2.0
LIVE_WINDOW = 3 * HEARTBEAT


def http_address(settings: Settings) -> str:
    host = settings.http_host
    if host in {"", "0.0.0.0", "::"}:
        host = socket.gethostname()
    return f"http://{host}:{settings.http_port}"


class Fleet(Service):
    """Heartbeats this worker's status and keeps everyone's."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        *,
        partitions: Callable[[], list[int]],
        ready: Callable[[], bool],
        lag: Callable[[], int | None] = lambda: None,
        denials: Denials | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._registry = registry
        self._partitions = partitions
        self._ready = ready
        self._lag = lag
        self._statuses: dict[str, WorkerStatus] = {}
        self._producer: Producer | None = None
        self._feed = ModelFeed(
            settings, self._received, topic=settings.status_topic, label="status", denials=denials
        )

    def on_init_dependencies(self) -> list[Service]:
        return [self._feed]

    # --- what this worker says --------------------------------------------------------

    def status(self) -> WorkerStatus:
        s = self._settings
        registry = self._registry
        rollouts = {}
        for rollout in registry.rollouts():
            view = rollout.describe(registry.get(rollout.name))
            rollouts[rollout.name] = {
                k: view[k] for k in ("stage", "fraction", "candidate", "figures", "rejected")
            }
        return WorkerStatus(
            id=s.worker_id,
            host=socket.gethostname(),
            http=http_address(s),
            group=s.app_id,
            models={m.name: m.version for m in registry.models()},
            rollouts=rollouts,
            partitions=self._partitions(),
            lag=self._lag(),
            ready=self._ready(),
        )

    @Service.timer(HEARTBEAT)
    async def _heartbeat(self) -> None:
        value = self.status().model_dump_json().encode()
        try:
            if self._producer is None:
                self._producer = Producer(rdkafka_config(self._settings, **{"linger.ms": 0}))
            key = self._settings.worker_id.encode()
            self._producer.produce(self._settings.status_topic, value, key)
            self._producer.poll(0)
        except (KafkaException, BufferError) as exc:
            logger.warning("heartbeat not sent: %s", exc)

    async def on_stop(self) -> None:
        """A tombstone: this worker leaves the fleet view now, not after the window."""
        producer = self._producer
        if producer is None:
            return
        try:
            producer.produce(self._settings.status_topic, None, self._settings.worker_id.encode())
        except (KafkaException, BufferError) as exc:
            logger.warning("no tombstone on the status topic: %s", exc)

        def flush() -> None:
            producer.flush(1.5)

        if not await bounded(flush, 2.0):
            logger.warning("the status producer did not flush within 1.5 s")

    # --- what the others say -----------------------------------------------------------

    async def _received(self, update: ModelUpdate) -> None:
        if not update.barrier and update.key is not None:
            worker = update.key.decode("utf-8", "replace")
            status = parse_worker_status(update.value) if update.value is not None else None
            if status is None:
                self._statuses.pop(worker, None)
            else:
                self._statuses[worker] = status
        if not update.done.done():
            update.done.set_result(None)

    def workers(self) -> list[WorkerStatus]:
        """Live workers of this group; this one always, as it is now."""
        me = self.status()
        others = [w for w in self._statuses.values() if w.id != me.id]
        now = datetime.now(UTC)
        return [me, *live_workers(others, group=me.group, now=now, window=LIVE_WINDOW)]

    def view(self) -> dict[str, Any]:
        """The ``GET /fleet`` document."""
        workers = sorted(self.workers(), key=lambda w: w.id)
        return fleet_view(workers, group=self._settings.app_id, me=self._settings.worker_id)
