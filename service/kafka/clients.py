"""Plain aiokafka clients built from :class:`Settings`, and topic creation.

The Faust app covers the scoring stream; these cover everything else (the
model feed, the publisher, the demo producer, the tests), with the same
broker list and security options.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.core.settings import Settings

__all__ = ["client_options", "consumer", "ensure_topics", "partitions_of", "producer"]

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in {"SSL", "SASL_SSL"}:
        options["ssl_context"] = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": settings.producer_linger_ms,
        "max_request_size": 16 * 1024 * 1024,
        **client_options(settings),
    }
    if settings.producer_compression != "none":
        options["compression_type"] = settings.producer_compression
    options.update(overrides)
    return AIOKafkaProducer(**options)


def consumer(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 16 * 1024 * 1024,
        **client_options(settings),
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def partitions_of(client: AIOKafkaConsumer, topic: str) -> set[int]:
    """The partition ids of ``topic``, from fresh metadata (the consumer's cache may be empty)."""
    cluster = await client._client.fetch_all_metadata()
    return set(cluster.partitions_for_topic(topic) or ())


async def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> None:
    """Create the topics if absent: the model and archive topics compacted, one partition.

    One model-topic partition keeps every model message in one total order, so
    "the newest message per name is current" means the same on every worker.
    """
    rf = settings.replication_factor
    wanted = [
        NewTopic(
            settings.model_topic,
            1,
            rf,
            topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(16 * 1024**2)},
        ),
        NewTopic(
            settings.archive_topic,
            1,
            rf,
            topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(16 * 1024**2)},
        ),
        NewTopic(settings.data_topic, settings.data_partitions, rf),
        NewTopic(settings.scored_topic, settings.data_partitions, rf),
        NewTopic(settings.dead_letter_topic, settings.data_partitions, rf),
    ]
    admin = AIOKafkaAdminClient(request_timeout_ms=int(timeout * 1000), **client_options(settings))
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if not missing:
            return
        response = await admin.create_topics(missing)
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: error {code} {rest}")
            if code == 0:
                logger.info("created topic %s", topic)
    finally:
        await admin.close()
