"""Outputs the broker refuses never stall the stream; a stuck batch turns /ready to 503.

Class 2 of the promises. The dead-letter and scored topics get small
``max.message.bytes``, so the dead-letter copy of a large bad record, and the
scored output of a record with a huge id, cannot be written: each becomes a
dead-letter entry (the original, or a size-and-offset entry when even that
does not fit), on every partition, and the good records after them are scored.
A scored topic that cannot be written for a while (deleted, on a broker that
creates no topics) stalls the batch: ``/ready`` says so, and recovers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
)

from scripts.harness import WorkerProcess, consume, publish_file, send_raw, wait_for
from service.core.messages import (
    HEADER_ORIGINAL_SIZE,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
)
from service.core.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 3


def _create(settings: Settings, scored: dict[str, str], dead: dict[str, str]) -> AdminClient:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers[0]})
    topics = [
        NewTopic(settings.data_topic, PARTITIONS, 1),
        NewTopic(settings.scored_topic, PARTITIONS, 1, config=scored),
        NewTopic(settings.dead_letter_topic, PARTITIONS, 1, config=dead),
    ]
    for future in admin.create_topics(topics).values():
        future.result(30)
    return admin


def _good(prefix: str, n: int) -> list[tuple[bytes | None, bytes | None]]:
    return [
        (
            f"{prefix}-{i}".encode(),
            orjson.dumps({"id": f"{prefix}-{i}", "model": "wine", "features": [13.0] * 13}),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_refused_outputs_are_dead_lettered_and_the_stream_goes_on(
    guarantee: str,
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    settings = make_settings(data_partitions=PARTITIONS, processing_guarantee=guarantee)
    _create(settings, {"max.message.bytes": "20000"}, {"max.message.bytes": "20000"})
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = workers(settings)
    worker.wait_ready()

    big_bad = [(f"bad-{p}".encode(), b"{" + b"x" * 60_000) for p in range(6)]  # DLQ copy too big
    big_id = [
        (
            f"id-{p}".encode(),
            orjson.dumps({"id": "i" * 30_000, "model": "wine", "features": [13.0] * 13}),
        )
        for p in range(6)
    ]  # the scored output is too big, and so is the original
    mid_id = [
        (
            f"mid-{p}".encode(),
            orjson.dumps({"id": "m" * 12_000, "model": "wine", "features": [13.0] * 13}),
        )
        for p in range(6)
    ]  # scored output (id + probabilities + headers) fits; kept as the control
    good = _good("after", 2000)
    send_raw(settings, settings.data_topic, [*big_bad, *big_id, *mid_id, *good])

    want = {f"after-{i}" for i in range(2000)} | {"m" * 12_000}
    scored = consume(
        settings,
        settings.scored_topic,
        until=lambda rs: {r.json()["id"] for r in rs} >= want,
        timeout=60,
    )
    ids = [r.json()["id"] for r in scored]
    assert set(ids) >= want, "good records after the unwritable ones were not all scored"
    if guarantee == "exactly_once":
        assert len(ids) == len(set(ids)) + 5  # the 6 "m" ids are equal; nothing else twice

    dead = consume(settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= 12)
    reasons = sorted(r.headers[HEADER_REASON].decode() for r in dead)
    assert reasons == ["invalid_json"] * 6 + ["output_too_large"] * 6, reasons
    for record in dead:
        assert record.value is None or len(record.value) < 20_000
        assert int(record.headers[HEADER_SOURCE_OFFSET]) >= 0
        assert HEADER_SOURCE_PARTITION in record.headers
        if record.value is None:  # the size-and-offset entry
            assert int(record.headers[HEADER_ORIGINAL_SIZE]) > 20_000
    assert {r.partition for r in dead} == set(range(PARTITIONS)) or len(dead) >= 12
    assert worker.get("/ready").status_code == 200


def test_a_stalled_batch_turns_ready_to_503_with_the_reason_and_recovers(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    """The scored topic disappears (the broker creates no topics): writes wait, then resume."""
    settings = make_settings(data_partitions=PARTITIONS, stall_timeout=3.0)
    admin = _create(settings, {}, {})
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = workers(settings)
    worker.wait_ready()
    for future in admin.delete_topics([settings.scored_topic]).values():
        future.result(30)
    send_raw(settings, settings.data_topic, _good("s", 300))

    def stalled() -> str | None:
        response = worker.get("/ready")
        reason = str(response.json()["reason"])
        return reason if response.status_code == 503 and "no progress" in reason else None

    reason = wait_for(stalled, 60, "/ready to report the stall")
    assert settings.data_topic in reason
    assert "hotswap_stalled 1.0" in worker.get("/metrics").text

    topic = NewTopic(settings.scored_topic, PARTITIONS, 1)
    for future in admin.create_topics([topic]).values():
        future.result(30)
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 300)
    assert {r.json()["id"] for r in scored} == {f"s-{i}" for i in range(300)}
    worker.wait_ready(30)
    assert "hotswap_stalled 0.0" in worker.get("/metrics").text
