"""Warnings about topics a user made before hotswap ran, as they are found.

The model, archive and control topics hold the newest message per name for as long as
the service runs: a worker restarted next month replays them to know what to serve.
Created by hotswap they are compacted; one made by hand with the cluster's defaults
(``cleanup.policy=delete``, a week's retention) loses every version older than its
retention, so a restart then serves nothing. A model topic of several partitions is
read whole, in no order across partitions. Neither stops the worker: they are logged,
once, at start-up, with what to change.
"""

from __future__ import annotations

import logging

from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

from service.core.settings import Settings
from service.kafka.clients import admin_client, rdkafka_config

__all__ = ["kept_topic_problems", "warn_about_kept_topics"]

logger = logging.getLogger(__name__)


def kept_topic_problems(
    configs: dict[str, dict[str, str]], partitions: dict[str, int]
) -> list[str]:
    """What is wrong with each topic whose newest message per key must be kept for ever."""
    problems = []
    for topic, config in configs.items():
        policy = config.get("cleanup.policy", "delete")
        retention = config.get("retention.ms", "-1")
        if "compact" not in policy and retention != "-1":
            days = int(retention) / 86_400_000 if retention.lstrip("-").isdigit() else 0
            problems.append(
                f"topic {topic} has cleanup.policy={policy} and retention.ms={retention} "
                f"({days:g} days): messages older than that are deleted, and a worker started "
                "after then will not find them; set cleanup.policy=compact"
            )
        if partitions.get(topic, 1) > 1:
            problems.append(
                f"topic {topic} has {partitions[topic]} partitions: its messages are read in no "
                "order across them; hotswap creates it with 1"
            )
    return problems


def warn_about_kept_topics(settings: Settings, timeout: float = 10.0) -> list[str]:
    """Log (and return) the problems of the model, archive and control topics as found."""
    topics = [settings.model_topic, settings.archive_topic, settings.control_topic]
    try:
        admin = admin_client(rdkafka_config(settings))
        meta = admin.list_topics(timeout=timeout)
        partitions = {t: len(meta.topics[t].partitions) for t in topics if t in meta.topics}
        resources = [ConfigResource(ResourceType.TOPIC, t) for t in partitions]
        configs = {
            resource.name: {k: e.value for k, e in future.result(timeout).items() if e.value}
            for resource, future in admin.describe_configs(resources).items()
        } if resources else {}  # fmt: skip
    except Exception as exc:  # no right to read them, a slow broker: nothing to say
        logger.debug("cannot read the kept topics' configs (%s)", exc)
        return []
    problems = kept_topic_problems(configs, partitions)
    for problem in problems:
        logger.warning("%s", problem)
    return problems
