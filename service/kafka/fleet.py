"""The fleet: every worker heartbeats to the status topic and reads everyone else's.

Every ``HEARTBEAT`` seconds a worker writes its :class:`WorkerStatus` (key =
its worker id) to the compacted status topic: what it serves, where its
rollouts stand (with their figures, so the decider can total them), which
data partitions it holds. It reads the same topic with a group-less
:class:`~service.kafka.model_feed.ModelFeed` (replay, then tail), so
``GET /fleet`` on any worker lists the live workers of its group: those whose
heartbeat *arrived* within ``LIVE_WINDOW`` seconds (by this worker's clock; see
:mod:`service.core.fleet`). A clean stop writes a tombstone, so the worker
drops out at once; a killed one drops out after the window.

Every heartbeat is parsed strictly; one that fails is dropped (that worker's
previous heartbeat is forgotten too) and counted in
``hotswap_control_rejections_total{reason}``. A heartbeat that cannot be sent
(the broker refuses it, or it never gets acknowledged) is counted in
``hotswap_heartbeat_failures_total`` and shown in ``/ready``'s ``detail``; it
does not make the worker unready: it still scores, only the fleet cannot see it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from mode import Service

from service.core import errors
from service.core.fleet import Heard, fleet_view, live_workers, status_of
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.core.settings import Settings
from service.core.signing import StatusVerifier, load_private_key, load_public_key, sign_status
from service.core.status_messages import MAX_LISTED, WorkerStatus, parse_worker_status
from service.kafka.authz import Denials
from service.kafka.clients import rdkafka_config
from service.kafka.model_feed import ModelFeed, ModelUpdate, TopicsOnce
from service.kafka.threads import bounded

__all__ = ["HEARTBEAT", "LIVE_WINDOW", "Fleet"]

logger = logging.getLogger(__name__)

HEARTBEAT = 2.0
LIVE_WINDOW = 3 * HEARTBEAT
MAX_HEARD = 1000  # workers remembered at once


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
        metrics: Metrics | None = None,
        partitions: Callable[[], list[int]],
        ready: Callable[[], bool],
        lag: Callable[[], int | None] = lambda: None,
        topics: Callable[[], dict[str, list[int]]] = dict,
        lag_by_topic: Callable[[], dict[str, int]] = dict,
        denials: Denials | None = None,
        created: TopicsOnce | None = None,  # the worker's topics, made once (its feeds share it)
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._registry = registry
        self._partitions = partitions
        self._ready = ready
        self._lag = lag
        self._topics = topics
        self._lag_by_topic = lag_by_topic
        # With a verify key, heartbeats are signed and others' checked: a worker's figures
        # count in automatic decisions, so only who holds the fleet's key may report them.
        self._sign = load_private_key(Path(settings.signing_key)) if settings.signing_key else None
        self._verify = (
            StatusVerifier(load_public_key(settings.verify_key)) if settings.verify_key else None
        )
        self._metrics = metrics or Metrics()
        self._heard: dict[str, Heard] = {}
        self._refused: dict[str, int] = {}  # heartbeats refused, by reason (a fixed set)
        self.heartbeat_problem = ""  # why the last heartbeat was not sent ("" once one is)
        self._producer: Producer | None = None
        self._feed = ModelFeed(
            settings,
            self._received,
            topic=settings.status_topic,
            label="status",
            denials=denials,
            topics=created,
        )

    def on_init_dependencies(self) -> list[Service]:
        return [self._feed]

    # --- what this worker says --------------------------------------------------------

    def status(self) -> WorkerStatus:
        s = self._settings
        return status_of(
            self._registry,
            id=s.worker_id,
            host=socket.gethostname(),
            http=http_address(s),
            group=s.app_id,
            partitions=self._partitions(),
            lag=self._lag(),
            topics=dict(sorted(self._topics().items())[:MAX_LISTED]),
            lag_by_topic=dict(sorted(self._lag_by_topic().items())[:MAX_LISTED]),
            ready=self._ready(),
        )

    @Service.timer(HEARTBEAT)
    async def _heartbeat(self) -> None:
        status = self.status()
        self._metrics.set_consumer_lag(status.lag_by_topic)
        if self._sign is not None:
            status = sign_status(status, self._sign)
        value = status.model_dump_json().encode()
        try:
            if self._producer is None:
                config = {"linger.ms": 0, "message.timeout.ms": int(3 * HEARTBEAT * 1000)}
                self._producer = Producer(rdkafka_config(self._settings, **config))
            key = self._settings.worker_id.encode()
            self._producer.produce(
                self._settings.status_topic, value, key, on_delivery=self._delivered
            )
            self._producer.poll(0)
        except (KafkaException, BufferError) as exc:
            self._failed(str(exc))

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.heartbeat_problem = ""
        else:
            self._failed(error.str())

    def _failed(self, why: str) -> None:
        self._metrics.heartbeat_failures.inc()
        if not self.heartbeat_problem:
            logger.warning("heartbeat not sent to %s: %s", self._settings.status_topic, why)
        self.heartbeat_problem = f"heartbeat not sent: {why}"[:300]

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
            self._hear(update)
        if not update.done.done():
            update.done.set_result(None)

    def _hear(self, update: ModelUpdate) -> None:
        worker = update.key.decode("utf-8", "replace") if update.key else "?"
        if update.value is None:
            self._heard.pop(worker, None)
            return
        try:
            status = parse_worker_status(update.value)
            if status.id != worker:
                raise errors.InvalidStatus(f"key {worker[:200]!r} differs from id {status.id!r}")
            if self._verify is not None:
                self._verify(status)
        except errors.ControlRejected as exc:
            self._heard.pop(worker, None)
            self._metrics.control_rejections.labels(exc.reason).inc()
            self._refused[exc.reason] = self._refused.get(exc.reason, 0) + 1
            logger.debug("status message of %r refused (%s): %s", worker, exc.reason, exc.detail)
            return
        if update.replay or status.group != self._settings.app_id:
            self._heard.pop(worker, None)  # replayed: in the log, not heard (a stopped worker's
            return  # last word is there too); another group's: not ours to show
        self._heard[worker] = Heard(status, time.monotonic(), datetime.now(UTC))
        if len(self._heard) > MAX_HEARD:  # a flood of made-up ids: keep the newest
            oldest = min(self._heard.values(), key=lambda h: h.arrived)
            self._heard.pop(oldest.status.id, None)

    def live(self) -> list[Heard]:
        """The other live workers of this group."""
        me = self._settings.worker_id
        others = [h for h in self._heard.values() if h.status.id != me]
        return live_workers(
            others, group=self._settings.app_id, now=time.monotonic(), window=LIVE_WINDOW
        )

    def workers(self) -> list[WorkerStatus]:
        """Live workers of this group; this one always, as it is now."""
        return [self.status(), *(h.status for h in self.live())]

    def view(self) -> dict[str, Any]:
        """The ``GET /fleet`` document."""
        view = fleet_view(
            self.status(), self.live(), group=self._settings.app_id, received_at=datetime.now(UTC)
        )
        return {**view, "refused_heartbeats": dict(self._refused)}
