"""The model feed: every worker reads the whole model topic, like a GlobalKTable.

A consumer-group consumer would split the model topic's partitions across
workers, so most workers would never see most models. This one has no group:
it is assigned every partition, replays from the beginning to the end offsets
seen at start (restoring the newest good version per name), flags
``replayed`` so scoring may begin, then tails new messages and hot-swaps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from service.core import errors
from service.core.messages import ModelMessage, parse_model_message
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.core.settings import Settings
from service.kafka.clients import consumer as make_consumer
from service.kafka.clients import ensure_topics, partitions_of

__all__ = ["ModelFeed"]

logger = logging.getLogger(__name__)

Raw = tuple[bytes | None, bytes | None]  # (key, value) of one model-topic message


def _guess_version(value: bytes) -> str | None:
    """Best-effort version of a message that failed validation, for its history entry."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return str(version)[:200] if version is not None else None


class ModelFeed(Service):
    """Replays then tails the model topic into the registry."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        metrics: Metrics,
        *,
        on_change: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        self._on_change = on_change
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[TopicPartition, int] = {}
        self.replayed = asyncio.Event()
        self.broker_reachable = False

    # --- lifecycle -------------------------------------------------------------

    @Service.task
    async def _feed(self) -> None:
        backoff = 0.5
        while not self.should_stop:
            try:
                await self._connect()
                backoff = 0.5
                if not self.replayed.is_set():
                    await self._replay()
                await self._tail()
            except (KafkaError, OSError, TimeoutError) as exc:
                self.broker_reachable = False
                logger.warning("model feed lost the broker (%s); retrying in %.1fs", exc, backoff)
                await self._close()
                await self.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    @Service.timer(2.0)
    async def _probe(self) -> None:
        """Keep ``broker_reachable`` current for ``/ready``."""
        client = self._consumer._client if self._consumer is not None else None
        if client is None:
            self.broker_reachable = False
            return
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), timeout=2.0)
            self.broker_reachable = True
        except (KafkaError, OSError, TimeoutError):
            self.broker_reachable = False

    async def on_stop(self) -> None:
        await self._close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                await consumer.stop()
            except Exception as exc:  # closing a broken client must not mask the cause
                logger.debug("closing model consumer: %s", exc)

    async def _connect(self) -> None:
        settings = self._settings
        await ensure_topics(settings, timeout=10.0)
        consumer = make_consumer(settings, group_id=None)
        self._consumer = consumer
        await asyncio.wait_for(consumer.start(), timeout=15.0)
        partitions = await partitions_of(consumer, settings.model_topic) or {0}
        tps = [TopicPartition(settings.model_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
            else:
                await consumer.seek_to_beginning(tp)
        self.broker_reachable = True

    # --- replay and tail ---------------------------------------------------------

    async def _replay(self) -> None:
        """Read to the end offsets seen now, then restore the newest good version per name."""
        consumer = self._consumer
        assert consumer is not None
        tps = list(consumer.assignment())
        end = await consumer.end_offsets(tps)
        pending: dict[str, list[Raw]] = {}
        while await self._behind(consumer, end):
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for m in messages:
                    name = m.key.decode("utf-8", "replace") if m.key else "?"
                    if m.value is None:
                        pending[name] = []  # a tombstone erases what came before
                    else:
                        pending.setdefault(name, []).append((m.key, m.value))
                    self._positions[tp] = m.offset + 1
        for name, raws in pending.items():
            await self._restore(name, raws)
        logger.info(
            "model topic replayed: %d models serving (%s)",
            len(self._registry.models()),
            ", ".join(f"{m.name}={m.version}" for m in self._registry.models()) or "none",
        )
        self.replayed.set()
        self._changed()

    @staticmethod
    async def _behind(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
        for tp, offset in end.items():
            if await consumer.position(tp) < offset:
                return True
        return False

    async def _restore(self, name: str, raws: list[Raw]) -> None:
        """Install the newest version that loads; record why the newer ones failed."""
        failures: list[tuple[str | None, errors.ModelRejected]] = []
        for key, value in reversed(raws):
            assert value is not None
            try:
                message = parse_model_message(key, value)
                await self._install(message)
                break
            except errors.ModelRejected as exc:
                failures.append((_guess_version(value), exc))
        for version, failure in reversed(failures):
            self._rejected(name, version, failure)

    async def _tail(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self.should_stop:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batch.items():
                for m in messages:
                    await self._apply(m.key, m.value)
                    self._positions[tp] = m.offset + 1

    async def _apply(self, key: bytes | None, value: bytes | None) -> None:
        name = key.decode("utf-8", "replace") if key else "?"
        if value is None:
            old = self._registry.remove(name)
            if old is not None:
                self._metrics.removed(name, old.version)
                logger.info("model %s unloaded by a tombstone (was version %s)", name, old.version)
            self._changed()
            return
        try:
            await self._install(parse_model_message(key, value))
        except errors.ModelRejected as exc:
            self._rejected(name, _guess_version(value), exc)

    async def _install(self, message: ModelMessage) -> None:
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self._executor, self._registry.build, message)
        except errors.ModelRejected:
            raise
        except Exception as exc:  # an unexpected failure is still a rejection, not a crash
            logger.exception("unexpected error loading %s %s", message.name, message.version)
            raise errors.InvalidModel(f"{type(exc).__name__}: {exc}") from None
        old = self._registry.install(model)
        self._metrics.swapped(model.name, model.version, old.version if old else None)
        self._metrics.model_load_seconds.labels(model.name).observe(model.load_ms / 1000)
        logger.info(
            "model %s: now serving version %s (was %s), built in %.1f ms",
            model.name,
            model.version,
            old.version if old else "none",
            model.load_ms,
        )
        self._changed()

    def _rejected(self, name: str, version: str | None, exc: errors.ModelRejected) -> None:
        self._registry.reject(name, version, exc)
        self._metrics.model_rejections.labels(name, exc.reason).inc()
        current = self._registry.get(name)
        logger.warning(
            "model %s: version %s rejected (%s: %s); still serving %s",
            name,
            version or "?",
            exc.reason,
            exc.detail,
            current.version if current else "nothing",
        )
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
