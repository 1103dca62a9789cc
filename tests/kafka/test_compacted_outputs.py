"""A user's compacted scored topic and a keyless record: only that record is dead-lettered.

The broker refuses a keyless record on a compacted topic (``INVALID_RECORD``), and may give
the same answer for every record that shared its produce request. Those keyed records are
fine: they are sent again and scored, in both guarantees, and the feed goes on. In
exactly_once the refused batch's transaction aborts; when nothing follows it, it is still
read again (it once waited for the next record, with ``/ready`` at 200).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from scripts.harness import WorkerProcess, consume, publish_file, send_raw, wait_for
from service.core.messages import HEADER_REASON
from service.core.outputs import InputRecord, Scored
from service.core.settings import Settings
from service.kafka.clients import ensure_topics, rdkafka_config
from service.kafka.delivery import Failure, permanent


def _record(n: int) -> bytes:
    return orjson.dumps({"id": n, "model": "wine", "features": [13.0] * 13})


@pytest.mark.integration
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_only_the_keyless_record_is_dead_lettered(
    guarantee: str,
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    settings = make_settings(processing_guarantee=guarantee, data_partitions=1)
    admin = AdminClient(rdkafka_config(settings))
    compact = {"cleanup.policy": "compact"}
    for future in admin.create_topics(
        [NewTopic(settings.scored_topic, 1, 1, config=compact)]
    ).values():
        future.result(30)
    asyncio.run(ensure_topics(settings))
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = workers(settings)
    worker.wait_ready()

    # One partition, sent at once: the keyless record shares a batch with keyed ones.
    keyed = [(b"k%d" % n, _record(n)) for n in range(200)]
    send_raw(settings, settings.data_topic, [*keyed[:100], (None, _record(-1)), *keyed[100:]])
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 200)
    assert sorted(r.json()["id"] for r in scored) == list(range(200))
    letters = consume(settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= 1)
    assert [(r.key, r.headers[HEADER_REASON]) for r in letters] == [(None, b"output_refused")]
    wait_for(lambda: worker.get("/ready").status_code == 200, 60, "ready")


def _failure(key: bytes | None, code: int) -> Failure:
    source = InputRecord(key, b"{}", "records", 0, 0)
    return Failure(Scored(key, b"{}", [], "wine", "1", source), KafkaError(code, "refused"))


def test_a_keyed_record_refused_as_invalid_on_its_own_is_final() -> None:
    """Without a keyless record refused beside it (a broker's schema validation, say), a
    keyed invalid record is dead-lettered, not sent again for ever."""
    alone = [_failure(b"k", KafkaError.INVALID_RECORD)]
    assert permanent(alone) == alone
    beside = [_failure(b"k", KafkaError.INVALID_RECORD), _failure(None, KafkaError.INVALID_RECORD)]
    assert permanent(beside) == beside[1:]
    timed_out = [_failure(None, KafkaError._MSG_TIMED_OUT)]
    assert permanent(timed_out) == []
