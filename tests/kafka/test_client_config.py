"""What every librdkafka client of the worker is built with (no broker needed)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer

from service.core.settings import Settings
from service.kafka.clients import rdkafka_config


def _poll_until(consumer: Consumer, done: Callable[[], bool], limit: float = 60.0) -> None:
    """librdkafka hands its log lines over on poll: poll until ``done()`` (bounded)."""
    deadline = time.monotonic() + limit
    while not done() and time.monotonic() < deadline:
        consumer.poll(0.1)


def test_kafka_debug_lines_reach_the_log_whatever_the_log_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HOTSWAP_KAFKA_DEBUG turns librdkafka's debug contexts on, and their lines are logged
    at INFO (a worker's handlers drop DEBUG), every one (not once a minute like errors)."""
    settings = Settings(broker="kafka://127.0.0.1:9", kafka_debug="broker")  # nothing listens
    caplog.set_level(logging.INFO)
    consumer = Consumer(rdkafka_config(settings, **{"group.id": "debug-probe"}))

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "librdkafka"]

    try:
        _poll_until(consumer, lambda: len(lines()) >= 20)
    finally:
        consumer.close()
    got = lines()
    assert len(got) >= 20, f"only {len(got)} librdkafka lines logged"
    assert all(r.levelno >= logging.INFO for r in got)
    assert any("STATE" in r.getMessage() or "CONNECT" in r.getMessage() for r in got)


def test_without_kafka_debug_no_debug_context_is_on() -> None:
    assert "debug" not in rdkafka_config(Settings())


def test_a_client_left_without_metadata_bootstraps_again_within_seconds() -> None:
    """librdkafka's default waits 5 minutes before it re-bootstraps a client that knows no
    usable broker; after a broker restart such a client (a group consumer that lost its
    coordinator) sat idle that long. The end-to-end check is the broker-restart fault run."""
    config = rdkafka_config(Settings())
    assert config["metadata.recovery.rebootstrap.trigger.ms"] <= 15_000
