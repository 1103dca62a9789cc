"""The Faust app and the data topic, declared once from :class:`Settings`.

Records are consumed as raw bytes (``value_serializer='raw'``) so that a
malformed record reaches our decoder, which names the defect, instead of
crashing the stream inside Faust's codec.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import faust

from service.settings import Settings

__all__ = ["create_app", "data_topic"]

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
    return faust.App(settings.app_id, **options)


def data_topic(app: faust.App, settings: Settings) -> Any:
    """The data topic as a raw-bytes Faust topic."""
    return app.topic(
        settings.data_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.data_partitions,
    )
