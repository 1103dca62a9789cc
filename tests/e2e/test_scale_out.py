"""Two workers in one consumer group: both serve every model, together score everything."""

from __future__ import annotations

import asyncio
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
from service.core.settings import Settings
from service.tools.produce import produce_records

pytestmark = pytest.mark.integration


def test_two_workers_both_swap_within_5s_and_together_score_every_record(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    base = make_settings()
    publish_file(base, trained["wine-logreg"], "wine", "1")
    pair = [
        workers(base),
        workers(base.model_copy(update={"http_port": make_settings().http_port})),
    ]
    for worker in pair:
        worker.wait_ready()
        assert worker.model_version("wine") == "1"

    def split() -> bool:
        states = [w.get("/ready").json() for w in pair]
        counts = [s["assigned_partitions"] for s in states]
        return all(c > 0 for c in counts) and sum(counts) == base.data_partitions

    wait_for(split, 30, "the two workers to split the data partitions")

    asyncio.run(produce_records(base, count=2000, id_prefix="one"))
    publish_file(base, trained["wine-forest"], "wine", "2")
    for worker in pair:

        def swapped(w: WorkerProcess = worker) -> bool:
            return w.model_version("wine") == "2"

        wait_for(swapped, 60, "v2 on both workers")

    asyncio.run(produce_records(base, count=2000, id_prefix="two"))
    wanted = {f"one-{i}" for i in range(2000)} | {f"two-{i}" for i in range(2000)}

    def complete(records: list[ConsumedRecord]) -> bool:
        return wanted <= {r.json()["id"] for r in records}

    records = consume(base, base.scored_topic, until=complete)
    assert wanted <= {r.json()["id"] for r in records}
    assert {r.json()["version"] for r in records if r.json()["id"].startswith("two-")} == {"2"}
    shares = [w.metric("hotswap_records_scored_total") for w in pair]
    assert all(share > 0 for share in shares), f"a worker scored nothing: {shares}"
    assert sum(shares) >= 4000
