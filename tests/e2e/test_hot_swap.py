"""Hot swap on a real broker: mid-stream swap, restart restore, several models."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.harness import (
    ConsumedRecord,
    WorkerProcess,
    consume,
    publish_file,
    wait_for,
)
from service.core.messages import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_VERSION
from service.core.settings import Settings
from service.tools.produce import produce_records

pytestmark = pytest.mark.integration

Workers = Callable[[Settings], WorkerProcess]


def _scored_ids(records: list[ConsumedRecord]) -> set[str]:
    return {r.json()["id"] for r in records}


def test_swap_mid_stream_loses_nothing_and_scores_nothing_twice(
    make_settings: Callable[..., Settings], workers: Workers, trained: dict[str, Path]
) -> None:
    settings = make_settings()
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = workers(settings)
    worker.wait_ready()
    assert worker.model_version("wine") == "1"

    # Records flow before, during and after the swap however fast this machine is: the producer
    # keeps sending chunks until the worker serves v2, then sends one more chunk.
    swapped = threading.Event()
    sent: list[str] = []

    def produce() -> None:
        chunk, after_swap = 0, 0
        while after_swap < 2:
            after_swap += swapped.is_set()
            prefix = f"swap{chunk}"
            asyncio.run(produce_records(settings, count=500, rate=2500, id_prefix=prefix))
            sent.extend(f"{prefix}-{i}" for i in range(500))
            chunk += 1

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: worker.metric("hotswap_records_scored_total") >= 500, 30, "500 scored")
    publish_file(settings, trained["wine-forest"], "wine", "2")
    wait_for(lambda: worker.model_version("wine") == "2", 60, "v2 served")
    swapped.set()
    producer.join()
    total = len(sent)

    records = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= total)
    ids = [r.json()["id"] for r in records]
    assert len(ids) == total, f"{len(ids)} scored records for {total} inputs"
    assert set(ids) == set(sent), "an input id is missing"
    versions = [r.json()["version"] for r in records]
    assert set(versions) == {"1", "2"}, f"versions seen: {set(versions)}"
    assert all(r.headers[HEADER_VERSION].decode() == r.json()["version"] for r in records)

    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for r in records:
        source = int(r.headers[HEADER_SOURCE_PARTITION])
        by_partition[source].append((int(r.headers[HEADER_SOURCE_OFFSET]), r.json()["version"]))
    for source, scored in by_partition.items():
        ordered = [v for _, v in sorted(scored)]
        first_v2 = ordered.index("2") if "2" in ordered else len(ordered)
        assert set(ordered[first_v2:]) <= {"2"}, f"a v1 record after v2 in partition {source}"
    assert worker.model_version("wine") == "2"


def test_restarted_worker_restores_the_last_model_without_republishing(
    make_settings: Callable[..., Settings], workers: Workers, trained: dict[str, Path]
) -> None:
    settings = make_settings()
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    publish_file(settings, trained["wine-forest"], "wine", "2")
    first = workers(settings)
    first.wait_ready()
    assert first.model_version("wine") == "2"
    asyncio.run(produce_records(settings, count=200, id_prefix="before"))
    consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 200)
    assert first.stop() == 0, first.tail()

    second = workers(settings)
    second.wait_ready()
    assert second.model_version("wine") == "2"
    asyncio.run(produce_records(settings, count=200, id_prefix="after"))

    def all_after(rs: list[ConsumedRecord]) -> bool:
        return len({i for i in _scored_ids(rs) if i.startswith("after-")}) == 200

    # Redelivered "before" records would precede the "after" ones in their partitions.
    records = consume(settings, settings.scored_topic, until=all_after)
    after = [r.json() for r in records if r.json()["id"].startswith("after-")]
    assert {d["id"] for d in after} == {f"after-{i}" for i in range(200)}
    assert {d["version"] for d in after} == {"2"}
    assert len(records) == 400, "a graceful restart must not rescore committed records"


def test_several_named_models_each_record_goes_to_its_model(
    make_settings: Callable[..., Settings], workers: Workers, trained: dict[str, Path]
) -> None:
    settings = make_settings()
    publish_file(settings, trained["wine-logreg"], "wine", "7")
    publish_file(settings, trained["wine-tree"], "wine-tree", "3")
    worker = workers(settings)
    worker.wait_ready()
    assert {m["name"] for m in worker.get("/models").json()} == {"wine", "wine-tree"}
    asyncio.run(produce_records(settings, count=100, model="wine", id_prefix="a"))
    asyncio.run(produce_records(settings, count=100, model="wine-tree", id_prefix="b", named=True))
    records = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 200)
    docs = [r.json() for r in records]
    assert {(d["id"][0], d["model"], d["version"]) for d in docs} == {
        ("a", "wine", "7"),
        ("b", "wine-tree", "3"),
    }
    assert len(_scored_ids(records)) == 200
    tree = worker.get("/models/wine-tree").json()
    assert tree["records_scored"] == 100
    assert tree["latency_ms"]["p99"] is not None
    assert worker.get("/models/nope").status_code == 404
