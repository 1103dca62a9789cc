"""Topics a user already has, as they are: their partition counts, their aborted transactions.

Against the real broker: the labels topic is created with the partition count
the data topic *has* (not the one the settings assume), or the label join
would look for labels on partitions where their records are not; and the
tools read only committed records, so a dead letter written in a transaction
that aborted (exactly_once, a batch sent again) is not replayed twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from scripts.harness import run_cli
from service.core.messages import HEADER_REASON
from service.core.settings import Settings
from service.kafka.clients import ensure_topics, rdkafka_config
from service.kafka.join_store import create_join_topics
from service.kafka.topic_checks import warn_about_kept_topics

pytestmark = pytest.mark.integration


def _create(settings: Settings, topic: str, partitions: int) -> None:
    admin = AdminClient(rdkafka_config(settings))
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def _partitions(settings: Settings, topic: str) -> int:
    meta = AdminClient(rdkafka_config(settings)).list_topics(topic, timeout=30)
    return len(meta.topics[topic].partitions)


def test_the_labels_topic_gets_the_partition_count_the_data_topic_has(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(data_partitions=4)
    _create(settings, settings.data_topic, 3)  # the user's topic, made before hotswap ran
    asyncio.run(ensure_topics(settings))
    assert _partitions(settings, settings.labels_topic) == 3
    assert _partitions(settings, settings.scored_topic) == 4  # hotswap's own: as configured

    # The worker's own path to the labels topic (create_join_topics) counts the same way.
    other = make_settings(data_partitions=4)
    other = other.model_copy(update={"data_topic": settings.data_topic})
    assert create_join_topics(other) == 4  # the join's state is sized for at least 4
    assert _partitions(other, other.labels_topic) == 3


def test_replay_dlq_never_reads_a_dead_letter_of_an_aborted_transaction(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    asyncio.run(ensure_topics(settings, only={settings.dead_letter_topic}))
    config = rdkafka_config(settings, **{"transactional.id": f"t-{uuid.uuid4().hex}"})
    producer = Producer(config)
    producer.init_transactions(30)
    headers: list[tuple[str, str | bytes | None]] = [(HEADER_REASON, b"unknown_model")]
    for outcome in ("abort", "commit"):
        producer.begin_transaction()
        producer.produce(settings.dead_letter_topic, b"{}", key=outcome.encode(), headers=headers)
        producer.flush(30)
        if outcome == "abort":
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    out = run_cli(settings, "replay-dlq", "--dry-run").stdout
    assert "would replay 1 dead letters" in out, out


def test_with_routes_the_unused_data_and_scored_topics_are_not_created(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A worker with routes reads its routes' topics: creating (or needing the right to
    see) the default data and scored topics kept a worker without CREATE from ever starting."""
    settings = make_settings()
    routes = tmp_path / "routes.yaml"
    output = f"{settings.data_topic}-payments.scored"
    routes.write_text(f"routes:\n  - topic: payments\n    model: m\n    output: {output}\n")
    settings = settings.model_copy(update={"routes": str(routes)})
    asyncio.run(ensure_topics(settings))
    topics = AdminClient(rdkafka_config(settings)).list_topics(timeout=30).topics
    assert output in topics
    assert settings.dead_letter_topic in topics
    assert settings.data_topic not in topics
    assert settings.scored_topic not in topics


def test_a_model_topic_made_by_hand_to_delete_old_messages_is_warned_about(
    make_settings: Callable[..., Settings],
) -> None:
    """With the cluster's defaults (delete after a week) the model topic loses every version
    older than a week, and a worker started later serves nothing: said at start-up."""
    settings = make_settings()
    admin = AdminClient(rdkafka_config(settings))
    made = NewTopic(settings.model_topic, 3, 1, config={"retention.ms": "604800000"})
    for future in admin.create_topics([made]).values():
        future.result(30)
    asyncio.run(ensure_topics(settings))  # the others, as hotswap makes them
    problems = warn_about_kept_topics(settings, timeout=60)  # a loaded machine: not 10 s
    assert len(problems) == 2, problems
    assert settings.model_topic in problems[0]
    assert "cleanup.policy=delete and retention.ms=604800000 (7 days)" in problems[0]
    assert "3 partitions" in problems[1]
    kept = ("model_topic", "archive_topic", "control_topic")
    fine = settings.model_copy(update={t: f"{getattr(settings, t)}-new" for t in kept})
    asyncio.run(ensure_topics(fine))  # made by hotswap: compacted, one partition
    assert warn_about_kept_topics(fine, timeout=60) == []
