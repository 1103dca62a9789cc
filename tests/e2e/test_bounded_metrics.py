"""Metrics stay bounded under junk names from either topic (class 8, on the real broker).

10,000 model messages under distinct junk names, and 10,000 records naming
10,000 distinct unknown models: the number of series on ``/metrics`` is the
same before and after (beyond the one shared label each kind may add), and
the worker's memory for model histories stays bounded.
"""

from __future__ import annotations

import orjson
import pytest

from scripts.harness import send_raw, wait_for
from tests.brokers import WineWorker

pytestmark = pytest.mark.integration

JUNK = 10_000


def _series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_series_stay_flat_under_junk_names_on_both_topics(wine_worker: WineWorker) -> None:
    settings, worker = wine_worker()
    # One of each kind first, so the shared labels exist before the baseline.
    send_raw(settings, settings.model_topic, [(b"junk-first", b"{not a model")])
    record = {"id": "u", "model": "unknown-first", "features": [1.0] * 13}
    send_raw(settings, settings.data_topic, [(b"u", orjson.dumps(record))])

    def rejected_total() -> float:
        for line in worker.get("/metrics").text.splitlines():
            if line.startswith("hotswap_model_rejections_total{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def dead_total() -> float:
        total = 0.0
        for line in worker.get("/metrics").text.splitlines():
            if line.startswith('hotswap_records_dead_lettered_total{reason="unknown_model"}'):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def lag_shown() -> bool:  # set by the first heartbeat, once the partitions are assigned
        return "hotswap_consumer_lag{" in worker.get("/metrics").text

    wait_for(
        lambda: rejected_total() >= 1 and dead_total() >= 1 and lag_shown(),
        60,
        "the first junk counted and the lag shown",
    )
    before = _series(worker.get("/metrics").text)

    models = [(f"junk-{i}".encode(), b"{not a model") for i in range(JUNK)]
    records = [
        (
            f"r{i}".encode(),
            orjson.dumps({"id": i, "model": f"unknown-{i}", "features": [1.0] * 13}),
        )
        for i in range(JUNK)
    ]
    send_raw(settings, settings.model_topic, models)
    send_raw(settings, settings.data_topic, records)
    wait_for(
        lambda: rejected_total() >= JUNK + 1 and dead_total() >= JUNK + 1,
        180,
        "every junk message and record counted",
    )
    after = _series(worker.get("/metrics").text)
    assert after == before, sorted(after ^ before)[:20]
    assert len(worker.get("/metrics").content) < 64_000
    assert worker.get("/models/junk-0/history").status_code == 404  # forgotten: bounded memory
    assert worker.get("/models/wine").json()["version"] == "1"
