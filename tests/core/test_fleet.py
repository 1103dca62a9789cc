"""The fleet view in the core: who is alive (by arrival), whether they route alike, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from service.core import errors
from service.core.fleet import (
    Heard,
    disagreements,
    fleet_figures,
    fleet_view,
    live_workers,
    status_of,
)
from service.core.registry import ModelRegistry
from service.core.rollout_messages import RolloutFigures
from service.core.status_messages import (
    MAX_LISTED,
    RolloutSummary,
    WorkerStatus,
    parse_worker_status,
)

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
CLOCK = 1000.0  # monotonic seconds "now"


def _worker(id: str, group: str = "g", **models: str) -> WorkerStatus:
    return WorkerStatus(id=id, host="h", http=f"http://h:{id}", group=group, models=models)


def _heard(status: WorkerStatus, age: float, skew: float = 0.0) -> Heard:
    status.last_seen = NOW + timedelta(seconds=skew)
    return Heard(status, CLOCK - age, NOW)


def test_live_workers_are_those_whose_heartbeat_arrived_within_the_window() -> None:
    heard = [
        _heard(_worker("b"), age=1),
        _heard(_worker("a"), age=5.9),
        _heard(_worker("old"), age=6.1),
        _heard(_worker("future"), age=60, skew=2_300_000_000),  # last_seen in 2099: still dead
        _heard(_worker("other", group="g2"), age=0),
    ]
    alive = live_workers(heard, group="g", now=CLOCK, window=6)
    assert [h.status.id for h in alive] == ["a", "b"]
    skewed = _heard(_worker("s"), age=0, skew=-3.5)
    view = fleet_view(_worker("me"), [skewed], group="g", received_at=NOW)
    assert {w["id"]: w["clock_skew_seconds"] for w in view["workers"]} == {"me": 0.0, "s": -3.5}


def test_disagreements_name_each_version_and_who_serves_it() -> None:
    workers = [
        _worker("a", wine="2", iris="1"),
        _worker("b", wine="1", iris="1"),
        _worker("c", iris="1"),
    ]
    assert disagreements(workers) == {"wine": {"2": ["a"], "1": ["b"], "none": ["c"]}}
    assert disagreements(workers[:1]) == {}


def test_workers_that_route_differently_disagree_even_on_one_serving_version() -> None:
    def canary(
        id: str, fraction: float, active: bool = True, stage: str = "canary"
    ) -> WorkerStatus:
        worker = _worker(id, wine="5")
        summary = RolloutSummary(stage=stage, fraction=fraction, candidate="6", active=active)  # type: ignore[arg-type]
        worker.rollouts = {"wine": summary}
        return worker

    same = [canary("a", 0.3), canary("b", 0.3)]
    assert disagreements(same) == {}
    assert disagreements([canary("a", 0.3), canary("b", 0.5)]) == {
        "wine": {"5 + canary 0.3 to 6": ["a"], "5 + canary 0.5 to 6": ["b"]}
    }
    # The split of the issue: one sends every record to v6, the other serves v5 alone.
    split = disagreements([canary("a", 0.3, stage="promoted"), _worker("b", wine="5")])
    assert split == {"wine": {"5 -> 6 (promoted)": ["a"], "5": ["b"]}}
    ended = canary("b", 0.3, active=False, stage="aborted")
    assert disagreements([_worker("a", wine="5"), ended]) == {}, "an ended rollout routes nothing"
    a, b = _worker("a", wine="5"), _worker("b", wine="5")
    a.models_total, a.routing_digest, b.routing_digest = 300, "1" * 64, "2" * 64
    assert disagreements([a, b]) == {"(models not listed)": {"1" * 16: ["a"], "2" * 16: ["b"]}}


def test_fleet_figures_total_the_same_candidate_and_count_this_worker_as_it_is_now() -> None:
    figures = RolloutFigures(compared=100, agreed=99, labelled=100)

    def shadow(id: str, candidate: str) -> WorkerStatus:
        worker = _worker(id)
        worker.rollouts = {
            "wine": RolloutSummary(stage="shadow", candidate=candidate, figures=figures)
        }
        return worker

    own = RolloutFigures(compared=50, agreed=50, labelled=50)
    workers = [shadow("a", "2"), shadow("b", "2"), shadow("c", "1")]
    total = fleet_figures(workers, "wine", "2", mine="a", own=own)
    assert (total.compared, total.agreed) == (150, 149)


def _status(**change: Any) -> bytes:
    doc: dict[str, Any] = {
        "id": "w1", "host": "h", "http": "http://h:1", "group": "g", "models": {"wine": "5"},
        "rollouts": {"wine": {"stage": "canary", "fraction": 0.3, "candidate": "6",
                             "figures": {"compared": 10, "agreed": 9, "labelled": 10}}},
        "partitions": [0, 1], "lag": 0, "ready": True, "last_seen": "2026-12-02T17:25:00Z",
    }  # fmt: skip
    return orjson.dumps({**doc, **change})


@pytest.mark.parametrize(
    "change",
    [
        {"last_seen": "2026-12-02T17:25:00"},  # no time zone: the 500 of the issue
        {"rollouts": {"wine": {"stage": "canary", "figures": {"compared": "lots"}}}},
        {"rollouts": {"wine": {"stage": "canary", "figures": {"compared": -1}}}},
        {"rollouts": {"wine": {"stage": "canary", "figures": {"abs_diff_sum": "NaN"}}}},
        {"rollouts": {"wine": {"stage": "hurry"}}},
        {"lag": "5"},
        {"lag": -1},
        {"ready": "yes"},
        {"models": {f"m{i}": "1" for i in range(MAX_LISTED + 1)}},
        {"partitions": list(range(10_001))},
        {"id": ""},
        {"host": "h" * 201},
    ],
)
def test_malformed_and_skewed_heartbeats_are_refused(change: dict[str, Any]) -> None:
    assert parse_worker_status(_status()).rollouts["wine"].candidate == "6"
    with pytest.raises(errors.InvalidStatus):
        parse_worker_status(_status(**change))


def test_oversized_heartbeats_are_refused() -> None:
    with pytest.raises(errors.StatusTooLarge):
        parse_worker_status(_status(why="x" * 300_000))


def test_a_heartbeat_stays_small_whatever_the_number_of_models() -> None:
    models = [SimpleNamespace(name=f"model-{i:05d}", version=f"v{i}") for i in range(10_000)]
    registry = SimpleNamespace(models=lambda: models, rollouts=lambda: [], get=lambda _: None)
    status = status_of(
        cast(ModelRegistry, registry), id="w", host="h", http="http://h:1", group="g",
        partitions=list(range(64)), lag=0, ready=True,
    )  # fmt: skip
    size = len(status.model_dump_json())
    assert (len(status.models), status.models_total, status.models_left_out) == (100, 10_000, 9_900)
    assert size < 10_000, size  # ~4 KB; the parser's cap is 256 KB, the topic's 1 MB
    assert parse_worker_status(status.model_dump_json().encode()) == status
