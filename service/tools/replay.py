"""Sending dead-lettered records back to the data topic once their cause is fixed.

Progress is a consumer group per reason filter (``<app id>-replay-dlq-<reasons>``),
committed after the re-sent records are acknowledged, so running the same
replay twice does not send a record twice, and a record that fails again is
dead-lettered again (at a new offset) for a later replay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka import TopicPartition

from service.core.messages import HEADER_REASON
from service.core.settings import Settings
from service.kafka.authz import denied_as
from service.kafka.clients import consumer, partitions_of, producer

__all__ = ["ReplayReport", "replay_dead_letters"]

logger = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0


async def replay_dead_letters(
    settings: Settings, *, reasons: set[str] | None = None, dry_run: bool = False
) -> ReplayReport:
    """Re-send dead letters (those with one of ``reasons``, or all) up to the current end."""
    label = "+".join(sorted(reasons)) if reasons else "all"
    group = f"{settings.app_id}-replay-dlq-{label}"
    source = consumer(settings, group_id=group)
    sink = producer(settings)
    report = ReplayReport()
    try:
        await source.start()
        await sink.start()
        with denied_as("READ", settings.dead_letter_topic, group=group):
            partitions = await partitions_of(source, settings.dead_letter_topic) or {0}
            tps = [TopicPartition(settings.dead_letter_topic, p) for p in sorted(partitions)]
            source.assign(tps)
            for tp in tps:
                committed = await source.committed(tp)
                if committed is None:
                    await source.seek_to_beginning(tp)
                else:
                    source.seek(tp, committed)
            end = await source.end_offsets(tps)
            while True:
                behind = [tp for tp in tps if await source.position(tp) < end[tp]]
                if not behind:
                    break
                batch = await source.getmany(*behind, timeout_ms=1000)
                futures = []
                for messages in batch.values():
                    for m in messages:
                        reason = dict(m.headers).get(HEADER_REASON, b"").decode()
                        if reasons and reason not in reasons:
                            report.skipped += 1
                            continue
                        report.replayed += 1
                        if not dry_run:
                            with denied_as("WRITE", settings.data_topic):
                                sent = await sink.send(settings.data_topic, m.value, key=m.key)
                            futures.append(sent)
                for fut in futures:
                    await fut
                if not dry_run:
                    await source.commit()
    finally:
        await sink.stop()
        await source.stop()
    logger.info("replayed %d dead letters (%d skipped)", report.replayed, report.skipped)
    return report
