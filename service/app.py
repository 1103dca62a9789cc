"""The Faust app: it runs the worker (signals, supervision) and the scoring agent.

Data records do not flow through Faust's per-event consumer (see
:mod:`service.kafka.data_feed`); the app's own consumer group is therefore
``<HOTSWAP_APP_ID>-app``, apart from the data consumers' ``HOTSWAP_APP_ID``
group, whose members use Kafka's standard assignor.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import faust

from service.core.settings import Settings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol.startswith("SASL"):
        ssl_context = None
        if settings.security_protocol == "SASL_SSL":
            ssl_context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl_context,
        )
    if settings.security_protocol == "SSL":
        return ssl.create_default_context(cafile=settings.ssl_cafile or None)
    return None


def create_app(settings: Settings) -> faust.App:
    """A Faust app whose consumer group is ``HOTSWAP_APP_ID``, at-least-once."""
    options: dict[str, Any] = {
        "broker": settings.faust_broker,
        "processing_guarantee": "at_least_once",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.data_partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_linger_ms": settings.producer_linger_ms,
        "producer_max_request_size": 16 * 1024 * 1024,
        "stream_buffer_maxsize": max(4 * settings.batch_size, 4096),
        "broker_commit_every": 10_000,
        "broker_max_poll_records": 2000,
        "broker_session_timeout": settings.session_timeout,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout / 3),
        "broker_rebalance_timeout": max(30.0, settings.session_timeout),
        "broker_commit_interval": 1.0,
        "web_enabled": False,  # the HTTP API is our own FastAPI app (see service.http)
        "datadir": settings.data_dir,
        "store": "memory://",
        "autodiscover": False,
    }
    if settings.producer_compression != "none":
        options["producer_compression_type"] = settings.producer_compression
    credentials = _credentials(settings)
    if credentials is not None:
        options["broker_credentials"] = credentials
    return faust.App(f"{settings.app_id}-app", **options)
