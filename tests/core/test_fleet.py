"""The fleet view in the core: who is alive, in which group, and whether they agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.core.fleet import disagreements, fleet_figures, live_workers
from service.core.rollout_messages import RolloutFigures, WorkerStatus

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def _worker(id: str, age: float = 0, group: str = "g", **models: str) -> WorkerStatus:
    return WorkerStatus(
        id=id, host="h", http=f"http://h:{id}", group=group, models=models,
        last_seen=NOW - timedelta(seconds=age),
    )  # fmt: skip


def test_live_workers_are_those_of_the_group_heard_from_within_the_window() -> None:
    statuses = [
        _worker("b", age=1),
        _worker("a", age=5.9),
        _worker("old", age=6.1),
        _worker("other", group="g2"),
    ]
    alive = live_workers(statuses, group="g", now=NOW, window=6)
    assert [w.id for w in alive] == ["a", "b"]


def test_disagreements_name_each_version_and_who_serves_it() -> None:
    workers = [
        _worker("a", wine="2", iris="1"),
        _worker("b", wine="1", iris="1"),
        _worker("c", iris="1"),
    ]
    assert disagreements(workers) == {"wine": {"2": ["a"], "1": ["b"], "none": ["c"]}}
    assert disagreements(workers[:1]) == {}


def test_fleet_figures_total_the_same_candidate_and_count_this_worker_as_it_is_now() -> None:
    figures = RolloutFigures(compared=100, agreed=99, labelled=100).model_dump()
    other = _worker("b")
    other.rollouts = {"wine": {"stage": "shadow", "candidate": "2", "figures": figures}}
    stale_me = _worker("a")
    stale_me.rollouts = {"wine": {"stage": "shadow", "candidate": "2", "figures": figures}}
    older = _worker("c")
    older.rollouts = {"wine": {"stage": "shadow", "candidate": "1", "figures": figures}}
    own = RolloutFigures(compared=50, agreed=50, labelled=50)
    total = fleet_figures([stale_me, other, older], "wine", "2", mine="a", own=own)
    assert (total.compared, total.agreed) == (150, 149)
