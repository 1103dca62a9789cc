"""Rollback: make an earlier version current again, in one call.

Every published version is kept in the compacted archive topic (key
``name\\0version``), so it survives the model topic's compaction and any
restart. Rolling back re-publishes that message, unchanged but for a note in
its metadata, to the model topic: every worker then loads, checks and warms it
like any new version (make-before-break) and the history shows it accepted.

"The previous version" (``rollback NAME`` without ``--to``) is read from Kafka
alone, so it is the same before and after any worker restart: publishing (and
rolling back) writes the archive, and compaction keeps each version's newest
entry, so the archive lists versions in the order they were last made current.
The current one is the newest message for NAME on the model topic (or, when a
worker is named, the version it serves); the previous one is the version made
current just before it. Rolling back twice therefore returns to where it began.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime

import httpx
from aiokafka import ConsumerRecord, TopicPartition

from service.core.errors import HotswapError
from service.core.messages import ModelMessage, parse_model_message
from service.core.settings import Settings
from service.kafka.authz import denied_as
from service.kafka.clients import consumer, partitions_of
from service.tools.errors import ToolError, worker_errors
from service.tools.publish import archive_key, publish_message

__all__ = [
    "RollbackError",
    "archived_versions",
    "choose_previous",
    "previous_version",
    "published_version",
    "rollback",
    "worker_view",
]

logger = logging.getLogger(__name__)


class RollbackError(ToolError):
    """The requested version cannot be found or chosen."""


async def _read_to_end(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to the end offsets seen at the start (no consumer group)."""
    reader = consumer(settings, group_id=None)
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await reader.start()
        with denied_as("READ", topic):
            partitions = await partitions_of(reader, topic)
            if not partitions:  # the topic does not exist (yet): nothing was ever written
                return records
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            end = await reader.end_offsets(tps)
            while any([await reader.position(tp) < end[tp] for tp in tps]):
                for messages in (await reader.getmany(timeout_ms=1000)).values():
                    records.extend(messages)
    finally:
        await reader.stop()
    return records


async def archived_versions(settings: Settings, name: str) -> dict[str, ModelMessage]:
    """Every archived version of ``name``, in the order each was last made current."""
    prefix = archive_key(name, "")
    found: dict[str, ModelMessage] = {}
    for record in await _read_to_end(settings, settings.archive_topic):
        if record.value is None or not (record.key or b"").startswith(prefix):
            continue
        try:
            message = parse_model_message(None, record.value)
        except HotswapError as exc:
            logger.debug("skipping archive offset %d: %s", record.offset, exc)
            continue
        found.pop(message.version, None)
        found[message.version] = message
    return found


async def published_version(settings: Settings, name: str) -> str | None:
    """The version of the newest message for ``name`` on the model topic (None: none, deleted)."""
    newest: bytes | None = None
    for record in await _read_to_end(settings, settings.model_topic):
        if record.key == name.encode():
            newest = record.value
    if newest is None:
        return None
    try:
        return parse_model_message(None, newest).version
    except HotswapError:
        return None


def choose_previous(
    order: list[str], current: str | None, rejected: Collection[str] = ()
) -> str | None:
    """The version made current just before ``current`` in ``order``, skipping ``rejected``."""
    earlier = order[: order.index(current)] if current in order else order
    candidates = [v for v in earlier if v != current and v not in rejected]
    return candidates[-1] if candidates else None


def worker_view(url: str, name: str) -> tuple[str | None, set[str]]:
    """What a worker serves for ``name``, and the versions it rejected."""
    url = url.rstrip("/")
    with worker_errors(url), httpx.Client(base_url=url, timeout=5) as client:
        serving = client.get(f"/models/{name}")
        history = client.get(f"/models/{name}/history")
        version = str(serving.json()["version"]) if serving.status_code == 200 else None
        entries = history.json() if history.status_code == 200 else []
    rejected = {str(h["version"]) for h in entries if h.get("status") == "rejected"}
    return version, rejected - ({version} if version else set())


async def previous_version(
    settings: Settings, name: str, *, serving: str | None = None, rejected: Collection[str] = ()
) -> str:
    """The version to roll ``name`` back to: the one made current before the current one.

    ``serving`` (what a worker serves) overrides the model topic's newest
    message as "the current one"; ``rejected`` versions are never chosen.
    """
    versions = await archived_versions(settings, name)
    if not versions:
        raise RollbackError(f"{name} has no archived version: publish one first")
    current = serving or await published_version(settings, name)
    previous = choose_previous(list(versions), current, rejected)
    if previous is None:
        raise RollbackError(
            f"{name} has no version made current before {current}: "
            f"pass --to VERSION (archived: {', '.join(versions)})"
        )
    return previous


async def rollback(settings: Settings, name: str, version: str) -> ModelMessage:
    """Re-publish archived ``version`` of ``name`` as the current one."""
    versions = await archived_versions(settings, name)
    if version not in versions:
        known = ", ".join(versions) or "none"
        raise RollbackError(f"{name} version {version} is not in the archive (archived: {known})")
    original = versions[version]
    metadata = {**original.metadata, "rolled_back_at": datetime.now(UTC).isoformat()}
    # A signature covers the whole message: a signed version goes back unchanged, note-less.
    message = original if original.signature else original.model_copy(update={"metadata": metadata})
    await publish_message(settings, message)
    logger.info("rolled %s back to version %s", name, version)
    return message
