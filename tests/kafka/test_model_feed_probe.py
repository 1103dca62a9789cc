"""A feed whose client stops answering while the broker answers others gets a new client.

After a broker restart, librdkafka (>= 2.10) was seen to leave one consumer of a worker
without any broker for minutes while the others recovered: its metadata requests kept
failing, ``/ready`` said "broker unreachable", and nothing told the feed. Here the probe's
request fails by hand (the one thing such a client shows), against a real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from scripts.harness import publish_file
from service.core.settings import Settings
from service.kafka.clients import ensure_topics
from service.kafka.model_feed import ModelFeed, ModelUpdate

pytestmark = pytest.mark.integration

BOUND = 180.0  # seconds; each wait ends at its event


async def _until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _replayed_feed(
    settings: Settings, hand_over: Callable[[ModelUpdate], Awaitable[None]]
) -> AsyncIterator[ModelFeed]:
    """A model feed, started and replayed; stopped on the way out."""
    feed = ModelFeed(settings, hand_over)
    await feed.start()
    try:
        await _until("the model topic replayed", feed.replayed.is_set)
        yield feed
    finally:
        await feed.stop()


def _silence_the_first_consumer(feed: ModelFeed) -> Any:
    """From now on the probe of the feed's current consumer fails (the one thing such a
    wedged client shows); a new consumer's probe answers. Returns the silenced one."""
    first = feed._consumer
    answering = feed._list_topics

    def unanswered() -> None:
        if feed._consumer is first:  # the old client only: a new one answers
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "no broker"))
        answering()

    feed._list_topics = unanswered  # type: ignore[method-assign]
    return first


def test_a_feed_whose_probe_keeps_failing_reads_on_with_a_new_consumer(
    make_settings: Callable[..., Settings], trained: dict[str, Path]
) -> None:
    settings = make_settings()
    asyncio.run(ensure_topics(settings))
    got: list[ModelUpdate] = []

    async def hand_over(update: ModelUpdate) -> None:
        if update.key is not None:
            got.append(update)
        update.done.set_result(None)

    async def scenario() -> None:
        async with _replayed_feed(settings, hand_over) as feed:
            await _until("the probe to reach the broker", lambda: feed.broker_reachable)
            first = _silence_the_first_consumer(feed)
            await _until("the probe to fail", lambda: not feed.broker_reachable)
            await _until("a new consumer", lambda: feed._consumer not in (first, None))
            await _until("the probe to answer again", lambda: feed.broker_reachable)
            # The new consumer reads on from where the old one was: a model published now.
            await asyncio.to_thread(publish_file, settings, trained["wine-logreg"], "wine", "2")
            await _until("the new model message", lambda: len(got) == 1)

    asyncio.run(scenario())
    assert [(u.key, u.replay) for u in got] == [(b"wine", False)]


def test_a_feed_that_reconnects_creates_no_topic_again(
    make_settings: Callable[..., Settings],
) -> None:
    """A worker creates its topics once, when it starts. A topic deleted while it runs is
    not created again behind its operator's back when a feed reconnects (a batch that
    cannot be written then stalls, and /ready says so)."""
    settings = make_settings()
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers[0]})

    def exists(topic: str) -> bool:
        return topic in admin.list_topics(timeout=30).topics

    async def hand_over(update: ModelUpdate) -> None:
        update.done.set_result(None)

    async def scenario() -> None:
        async with _replayed_feed(settings, hand_over) as feed:
            assert await asyncio.to_thread(exists, settings.scored_topic)  # made at start
            for future in admin.delete_topics([settings.scored_topic]).values():
                await asyncio.to_thread(future.result, 30)
            await _until("the deletion", lambda: not exists(settings.scored_topic))
            first = _silence_the_first_consumer(feed)
            await _until("a new consumer", lambda: feed._consumer not in (first, None))
            await _until("the probe to answer again", lambda: feed.broker_reachable)

    asyncio.run(scenario())
    assert not exists(settings.scored_topic)
