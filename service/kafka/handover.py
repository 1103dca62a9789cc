"""The Faust side of a worker: an app with no Kafka client, and the channels feeds hand over on.

Faust runs the agents and supervises the services; its own Kafka consumer and producer are
switched off (see :mod:`service.worker`). A hand-over channel holds one item and is never
paused or cleared, so an item sent by a feed reaches its agent once, and the feed awaits
the item's future instead of polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.app.base import BootStrategy
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from service.core.settings import Settings
from service.kafka.model_feed import ModelUpdate

__all__ = ["HandOverChannel", "create_app", "in_order"]

logger = logging.getLogger(__name__)


class HandOverChannel(faust.Channel):  # type: ignore[misc,type-arg]
    """A channel for one reader: its queue holds one item and is never paused or cleared.

    ``put`` waits until the agent's stream has subscribed (Faust subscribes a
    reader when it starts iterating), so an item sent early is not dropped.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reader = asyncio.Event()

    @property
    def queue(self) -> ThrowableQueue:  # type: ignore[type-arg]
        if self._queue is None:
            # Its own flow control, never suspended: Faust's (app.flow_control) starts
            # suspended and is resumed only by Faust's Kafka consumer, switched off here.
            never_paused = FlowControlEvent(initially_suspended=False)
            self._queue = ThrowableQueue(maxsize=1, flow_control=never_paused)
        return self._queue

    def clone(self, *, is_iterator: bool | None = None, **kwargs: Any) -> Any:
        reader: Any = super().clone(is_iterator=is_iterator, **kwargs)
        if reader.is_iterator:
            self._root_channel()._reader.set()
        return reader

    def _root_channel(self) -> HandOverChannel:
        root = self._root or self
        assert isinstance(root, HandOverChannel)
        return root

    async def put(self, value: Any) -> None:
        await self._root_channel()._reader.wait()
        await super().put(value)


async def in_order(
    updates: Any,
    submit: Callable[[ModelUpdate], Awaitable[None]],
    settle: Callable[[], Awaitable[None]],
) -> None:
    """A feed's messages, one at a time; a barrier (end of replay) waits for all of them."""
    async for update in updates:
        try:
            await (settle() if update.barrier else submit(update))
        finally:
            if not update.done.done():
                update.done.set_result(None)


def create_app(settings: Settings) -> faust.App:
    """A Faust app that runs agents and services, with no Kafka client of its own."""
    app = faust.App(
        f"{settings.app_id}-worker",
        broker="kafka://unused:9092",  # never contacted: the boot strategy disables Kafka
        web_enabled=False,  # the HTTP API is our own FastAPI app (service.http)
        datadir=settings.data_dir,
        store="memory://",
        autodiscover=False,
    )
    app.boot_strategy = BootStrategy(app, enable_kafka=False, enable_web=False)
    return app
