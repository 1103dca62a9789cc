"""The model feed: every worker reads the whole model topic, like a GlobalKTable.

The same feed reads the control topic of rollouts (and the fleet's status
topic): one :class:`ModelFeed` per topic, each with its own hand-over; the
control feed starts once the model feed has replayed (``after``), so a
candidate is checked against the version that serves.

A consumer-group consumer would split the model topic's partitions across
workers, so most workers would never see most models. This one joins no
group: it is assigned every partition, replays from the beginning to the end
offsets seen at start, flags ``replayed`` so scoring may begin, then tails.
Each message goes, in log order, to the Faust model agent (``hand_over``),
which validates and swaps (in order per model name); at the end of the
replay a barrier waits until every message is applied, so "replayed" means
"applied", and only then does scoring start.

confluent-kafka (librdkafka) reads every codec a producer may use; its calls
block, so they run on one thread of their own, each bounded by a short
timeout so a stop is never held up by a silent broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message
from mode import Service

from service.core.settings import Settings
from service.kafka.authz import Denials, NotAuthorized, denied_as
from service.kafka.clients import ensure_topics
from service.kafka.fetched import fetch
from service.kafka.readtoend import assign_all, drain, reader_group, standalone_consumer
from service.kafka.topic_checks import warn_about_kept_topics

__all__ = ["ModelFeed", "ModelUpdate", "TopicsOnce"]

#: Seconds the probe may fail in a row before the feed's consumer is replaced by a new one.
_REPLACE_AFTER = 10.0

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class ModelUpdate:
    """One model-topic message for the model agent, and the future it resolves."""

    key: bytes | None
    value: bytes | None
    offset: int
    replay: bool
    barrier: bool = False  # no message: "done" once every earlier message is applied
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


HandOver = Callable[[ModelUpdate], Awaitable[None]]


class TopicsOnce:
    """The worker's topics created if absent, once: by the first of its feeds to reach
    the broker, the others waiting for that one.

    Not again on a reconnect (a broker restart, a replaced client): a topic deleted while
    the worker runs is not created again behind its operator's back, and a batch that
    cannot be written stalls, which ``/ready`` reports. One object per worker, shared by
    its feeds, so ``/ready`` (the model and control topics replayed) comes after it.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._done = False
        self._lock = asyncio.Lock()

    async def ensure(self, timeout: float) -> None:
        if self._done:
            return
        async with self._lock:
            if not self._done:
                await asyncio.wait_for(ensure_topics(self._settings, timeout=timeout), timeout + 1)
                self._done = True  # and, beside the replay, how the kept topics were found:
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, warn_about_kept_topics, self._settings)


class ModelFeed(Service):
    """Replays then tails a topic (the model topic unless told), handing each message over."""

    def __init__(
        self,
        settings: Settings,
        hand_over: HandOver,
        *,
        topic: str | None = None,
        label: str = "model",
        after: asyncio.Event | None = None,
        denials: Denials | None = None,
        topics: TopicsOnce | None = None,  # the worker's, shared by its feeds
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._topics = topics or TopicsOnce(settings)
        self._hand_over = hand_over
        self._topic = topic or settings.model_topic
        self._label = label
        self._after = after
        self.denials = denials or Denials("")
        self._group = {"group": reader_group(settings), "group_operation": "DESCRIBE"}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{label}-feed")
        self._consumer: Consumer | None = None
        self._positions: dict[int, int] = {}
        self.replayed = asyncio.Event()
        self.broker_reachable = False
        self._unanswered_since: float | None = None  # the probe's first failure in a row

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    @Service.task
    async def _feed(self) -> None:
        backoff = 0.5
        while self._after is not None and not self._after.is_set() and not self.should_stop:
            await self.sleep(0.05)  # e.g. the control topic waits for the model topic
        while not self.should_stop:
            try:
                with denied_as("READ", self._topic, **self._group):
                    await self._topics.ensure(timeout=5.0)
                    ends = await self._call(self._connect)
                    self.broker_reachable = True
                    backoff = 0.5
                    if not self.replayed.is_set():
                        await self._replay(ends)
                    self.denials.granted(f"{self._label} feed")
                    await self._tail()
            except NotAuthorized as denial:  # reachable, refused: retried, named in /ready
                self.broker_reachable = True
                self.denials.refused(f"{self._label} feed", denial)
                await self._call(self._close)
                await self.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except (KafkaException, OSError, TimeoutError, Exception) as exc:
                if self.should_stop:
                    break
                self.broker_reachable = False
                logger.warning(
                    "%s feed lost the broker (%s); retrying in %.1fs", self._label, exc, backoff
                )
                await self._call(self._close)
                await self.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    @Service.timer(2.0)
    async def _probe(self) -> None:
        """Keep ``broker_reachable`` current for ``/ready``, and note since when it is not."""
        if self._consumer is None:
            return
        try:
            await self._call(self._list_topics)
            self.broker_reachable = True
            self._unanswered_since = None
        except KafkaException:
            self.broker_reachable = False
            if self._unanswered_since is None:
                self._unanswered_since = time.monotonic()

    def _list_topics(self) -> None:
        if self._consumer is not None:
            self._consumer.list_topics(self._topic, timeout=1.5)

    def _connect(self) -> dict[int, int]:
        self._close()
        consumer = standalone_consumer(self._settings)
        self._consumer = consumer
        return assign_all(consumer, self._topic, self._positions, timeout=5.0)

    def _close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                logger.debug("closing the %s consumer: %s", self._label, exc)

    async def on_stop(self) -> None:
        try:
            await asyncio.wait_for(self._call(self._close), timeout=1.0)
        except TimeoutError:  # no group to leave, no offsets to commit: nothing is lost
            logger.warning("the %s consumer did not close within 1 s", self._label)
        self._thread.shutdown(wait=False, cancel_futures=True)

    # --- replay and tail ----------------------------------------------------------

    async def _replay(self, ends: dict[int, int]) -> None:
        """Apply every message up to the end offsets seen at start, in log order."""
        consumer = self._consumer
        assert consumer is not None
        stream = drain(consumer, self._topic, ends, should_stop=lambda: self.should_stop)
        count = 0
        while True:
            message = await self._call(next, stream, None)
            if message is None:
                break
            await self._apply(message, replay=True)
            count += 1
        if self.should_stop:
            return
        barrier = ModelUpdate(None, None, -1, replay=True, barrier=True)
        await self._hand_over(barrier)
        await barrier.done
        logger.info("%s topic %s replayed (%d messages)", self._label, self._topic, count)
        self.replayed.set()

    async def _tail(self) -> None:
        while not self.should_stop and self._consumer is not None:
            consumer = self._consumer
            messages = await self._call(fetch, consumer, 100, 0.5, True)
            since = self._unanswered_since
            if since is not None and time.monotonic() - since > _REPLACE_AFTER:
                # Seen after a broker restart: the broker answered everyone else, and this
                # client kept failing (librdkafka had dropped the broker it knew). A new one.
                self._unanswered_since = None
                raise TimeoutError(f"no metadata for {_REPLACE_AFTER:.0f} s; a new consumer")
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal() or (error.code() < 0 and not error.retriable()):
                        logger.warning("%s feed: %s", self._label, error)
                    continue
                await self._apply(message, replay=False)

    async def _apply(self, message: Message, *, replay: bool) -> None:
        offset, partition = message.offset() or 0, message.partition() or 0
        update = ModelUpdate(message.key(), message.value(), offset, replay)
        await self._hand_over(update)
        await update.done
        self._positions[partition] = offset + 1
