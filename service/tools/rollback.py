"""Rollback: make an earlier version current again, in one call.

Every published version is kept in the compacted archive topic (key
``name\\0version``), so it survives the model topic's compaction and any
restart. Rolling back re-publishes that message, unchanged but for a note in
its metadata, to the model topic: every worker then loads, checks and warms it
like any new version (make-before-break) and the history shows it accepted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
from aiokafka import TopicPartition

from service.core.messages import ModelMessage, parse_model_message
from service.core.settings import Settings
from service.kafka.clients import consumer, partitions_of
from service.tools.publish import publish_message

__all__ = ["RollbackError", "archived_versions", "previous_accepted", "rollback"]

logger = logging.getLogger(__name__)


class RollbackError(Exception):
    """The requested version cannot be found or chosen."""


async def archived_versions(settings: Settings, name: str) -> dict[str, ModelMessage]:
    """Every archived version of ``name``, oldest first (a dict keeps publish order)."""
    reader = consumer(settings, group_id=None)
    await reader.start()
    found: dict[str, ModelMessage] = {}
    try:
        partitions = await partitions_of(reader, settings.archive_topic) or {0}
        tps = [TopicPartition(settings.archive_topic, p) for p in sorted(partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        end = await reader.end_offsets(tps)
        while any([await reader.position(tp) < end[tp] for tp in tps]):
            for messages in (await reader.getmany(timeout_ms=1000)).values():
                for m in messages:
                    if m.value is None or not (m.key or b"").startswith(name.encode() + b"\x00"):
                        continue
                    message = parse_model_message(None, m.value)
                    found.pop(message.version, None)
                    found[message.version] = message
    finally:
        await reader.stop()
    return found


def previous_accepted(url: str, name: str) -> str:
    """The last version a worker accepted before the one it serves now."""
    try:
        current = httpx.get(f"{url}/models/{name}", timeout=5).json()["version"]
        history = httpx.get(f"{url}/models/{name}/history", timeout=5).json()
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise RollbackError(f"cannot ask {url} for {name}'s history ({exc}); pass --to") from None
    accepted = [h["version"] for h in history if h["status"] == "accepted"]
    earlier = [v for v in accepted if v != current]
    if not earlier:
        raise RollbackError(f"{name} has no accepted version before {current}")
    return str(earlier[-1])


async def rollback(settings: Settings, name: str, version: str) -> ModelMessage:
    """Re-publish archived ``version`` of ``name`` as the current one."""
    versions = await archived_versions(settings, name)
    if version not in versions:
        known = ", ".join(versions) or "none"
        raise RollbackError(f"{name} version {version} is not in the archive (archived: {known})")
    original = versions[version]
    metadata = {**original.metadata, "rolled_back_at": datetime.now(UTC).isoformat()}
    message = original.model_copy(update={"metadata": metadata})
    await publish_message(settings, message)
    logger.info("rolled %s back to version %s", name, version)
    return message
