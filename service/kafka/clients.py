"""Kafka clients built from :class:`Settings`: one security builder, two renderings.

The worker's data path and model feed run on confluent-kafka (librdkafka: every codec,
KIP-447 transactions), configured by :func:`rdkafka_config`; the command-line tools and tests
use aiokafka (:func:`client_options`). Both read one :class:`Security`: one cluster.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAuthorizationFailedError
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)

from service.core.routes import load_routes
from service.core.settings import Settings
from service.kafka.authz import NotAuthorized

__all__ = [
    "Security",
    "admin_client",
    "client_options",
    "consumer",
    "ensure_topics",
    "group_consumer_config",
    "partitions_of",
    "producer",
    "rdkafka_config",
    "topic_limits",
]

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_TOPIC_AUTHORIZATION_FAILED = 29


class _OncePerMinute(logging.Filter):
    """librdkafka repeats a connection failure for every broker and retry: log it once."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:  # asked for (HOTSWAP_KAFKA_DEBUG): every line, at
            record.levelno, record.levelname = logging.INFO, "INFO"  # INFO (handlers drop DEBUG)
            return True
        text = record.getMessage()
        key = text.split("]: ", 1)[-1][:120]
        now = time.monotonic()
        if now - self._seen.get(key, -60.0) < 60.0:
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = now
        return True


_RDKAFKA_LOG = logging.getLogger("librdkafka")
_RDKAFKA_LOG.addFilter(_OncePerMinute())


@dataclass(frozen=True, slots=True)
class Security:
    """Connection security, read once from settings and rendered for each client library."""

    protocol: str
    mechanism: str
    username: str
    password: str
    cafile: str

    @classmethod
    def of(cls, settings: Settings) -> Security:
        return cls(
            settings.security_protocol,
            settings.sasl_mechanism,
            settings.sasl_username,
            settings.sasl_password.get_secret_value(),
            settings.ssl_cafile,
        )

    @property
    def tls(self) -> bool:
        return self.protocol in {"SSL", "SASL_SSL"}

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL")


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options for aiokafka clients (tools, tests)."""
    sec = Security.of(settings)
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": sec.protocol,
    }
    if sec.tls:
        options["ssl_context"] = ssl.create_default_context(cafile=sec.cafile or None)
    if sec.sasl:
        options["sasl_mechanism"] = sec.mechanism
        options["sasl_plain_username"] = sec.username
        options["sasl_plain_password"] = sec.password
    return options


def rdkafka_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The same connection and security, as librdkafka (confluent-kafka) configuration."""
    sec = Security.of(settings)
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(settings.bootstrap_servers),
        "security.protocol": sec.protocol.lower(),
        "client.id": f"hotswap-{settings.worker_id}",
        "logger": _RDKAFKA_LOG,  # librdkafka's own log lines join the worker's log
        # After a broker restart a client may know no broker any more (librdkafka #5511,
        # #5600): it starts again from bootstrap.servers after 10 s, not 5 minutes.
        "metadata.recovery.rebootstrap.trigger.ms": 10_000,
    }
    if settings.kafka_debug:
        config["debug"] = settings.kafka_debug
        _RDKAFKA_LOG.setLevel(logging.DEBUG)
    if sec.tls and sec.cafile:
        config["ssl.ca.location"] = sec.cafile
    if sec.sasl:
        config["sasl.mechanisms"] = sec.mechanism
        config["sasl.username"] = sec.username
        config["sasl.password"] = sec.password
    config.update(extra)
    return config


def group_consumer_config(settings: Settings) -> dict[str, Any]:
    """The data consumer: the worker group, manual commits, committed records only."""
    s = settings
    return rdkafka_config(
        s,
        **{
            "group.id": s.app_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": int(s.session_timeout * 1000),
            "heartbeat.interval.ms": int(min(3.0, s.session_timeout / 3) * 1000),
            "fetch.message.max.bytes": 16 * 1024 * 1024,
            # Read-ahead kept locally: 16 MiB (librdkafka's default is 64) is over half a second
            # of records at full rate; same throughput, ~100 MB less RSS when there is a backlog.
            "queued.max.messages.kbytes": 16 * 1024,
            "receive.message.max.bytes": 130 * 1024 * 1024,
            # Partitions added to a topic are read within 30 s, not librdkafka's 5 minutes.
            "topic.metadata.refresh.interval.ms": 30_000,
        },
    )


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
    """A tool's reader. read_committed (librdkafka's default, not aiokafka's): a dead letter
    or model message of an aborted transaction was never written, so no tool acts on one."""
    options: dict[str, Any] = {
        "isolation_level": "read_committed",
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
    if topic in cluster.unauthorized_topics:  # not "absent": the caller names the right
        raise TopicAuthorizationFailedError(topic)
    return set(cluster.partitions_for_topic(topic) or ())


async def ensure_topics(
    settings: Settings, *, timeout: float = 30.0, only: Collection[str] | None = None
) -> None:
    """Create the topics if absent: model, archive, control and status compacted, one partition.

    One model-topic partition keeps every model message in one total order, so
    "the newest message per name is current" means the same on every worker.
    ``only``: just these of them, the ones the caller uses; on a broker with ACLs a
    principal sees (DESCRIBE) only its own topics and would take the others for absent.
    A topic absent and not creatable (no CREATE right) is :class:`NotAuthorized`.
    """
    rf = settings.replication_factor
    big = {"max.message.bytes": str(16 * 1024**2)}  # a model inline, or a candidate in a rollout

    def compacted(name: str, **configs: str) -> NewTopic:
        return NewTopic(name, 1, rf, topic_configs={"cleanup.policy": "compact", **configs})

    wanted = [
        compacted(settings.model_topic, **big),
        compacted(settings.archive_topic, **big),
        compacted(settings.control_topic, **big),
        compacted(settings.status_topic, **{"segment.ms": str(3_600_000)}),
        NewTopic(settings.data_topic, settings.data_partitions, rf),
        NewTopic(settings.scored_topic, settings.data_partitions, rf),
        NewTopic(settings.shadow_topic, settings.data_partitions, rf),
        NewTopic(settings.dead_letter_topic, settings.data_partitions, rf),
        # Co-partitioned with the data: a label lands on its record's partition number.
        NewTopic(settings.labels_topic, settings.data_partitions, rf),
    ]
    if settings.routes:  # the routes' output topics (their input topics are the user's)
        routes = load_routes(settings.routes)
        read = {r.topic for r in routes.routes if r.topic is not None}
        unused = {settings.data_topic, settings.scored_topic} - read  # unless a route reads it
        wanted = [t for t in wanted if t.name not in unused]  # (or writes it: added below)
        named = {t.name for t in wanted}
        outputs = [t for t in routes.outputs if t not in named]
        wanted += [NewTopic(t, settings.data_partitions, rf) for t in outputs]
    if only is not None:
        wanted = [t for t in wanted if t.name in only]
    admin = AIOKafkaAdminClient(request_timeout_ms=int(timeout * 1000), **client_options(settings))
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if not missing:
            return
        if settings.data_topic in existing:  # the labels co-partitioned with the data as it is
            cluster = await admin._client.fetch_all_metadata()
            count = len(cluster.partitions_for_topic(settings.data_topic) or ())
            missing = [
                NewTopic(t.name, count, rf) if t.name == settings.labels_topic and count else t
                for t in missing
            ]
        response = await admin.create_topics(missing)
        for topic, code, *rest in response.topic_errors:
            if code == _TOPIC_AUTHORIZATION_FAILED:
                raise NotAuthorized("CREATE", "topic", topic)
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: error {code} {rest}")
            if code == 0:
                logger.info("created topic %s", topic)
    finally:
        await admin.close()


_ADMIN_KEYS = {
    "bootstrap.servers",
    "security.protocol",
    "ssl.ca.location",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "client.id",
    "logger",
}


def admin_client(config: dict[str, Any]) -> AdminClient:
    """An admin client on the connection and security of a producer's or consumer's config."""
    return AdminClient({k: v for k, v in config.items() if k in _ADMIN_KEYS})


def topic_limits(config: dict[str, Any], topics: Sequence[str], timeout: float) -> dict[str, int]:
    """``max.message.bytes`` of each topic (1 MB, Kafka's default, when it cannot be read)."""
    admin = admin_client(config)
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
    limits = dict.fromkeys(topics, 1_048_588)
    try:
        for resource, future in admin.describe_configs(resources).items():
            entry = future.result(timeout).get("max.message.bytes")
            if entry is not None and entry.value:
                limits[resource.name] = int(entry.value)
    except (KafkaException, ValueError) as exc:
        logger.warning("cannot read the output topics' max.message.bytes (%s)", exc)
    return limits
