"""Safe rollouts on a real broker, driven through the CLI, the topics and HTTP.

Shadow, canary, promote, abort, a restart mid-rollout, an automatic decision
made once by two workers, the fleet view, and a backtest that writes nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from scripts.harness import (
    ConsumedRecord,
    RolloutStart,
    WorkerProcess,
    consume,
    publish_file,
    run_cli,
    send_raw,
    wait_for,
)
from service.core.messages import HEADER_VERSION
from service.core.rollout import canary_share
from service.core.settings import Settings
from service.kafka.readtoend import read_to_end
from service.tools.produce import produce_records, wine_rows
from tests.brokers import WineWorker

pytestmark = pytest.mark.integration

Workers = Callable[[Settings], WorkerProcess]


def _rollout(worker: WorkerProcess, name: str = "wine") -> dict[str, Any]:
    response = worker.get(f"/models/{name}/rollout")
    return dict(response.json()) if response.status_code == 200 else {}


def _wait_stage(
    worker: WorkerProcess, stage: str, candidate: str = "2", timeout: float = 60
) -> None:
    def there() -> bool:
        view = _rollout(worker)
        assert not view.get("rejected"), view
        return view.get("stage") == stage and view.get("candidate") == candidate

    wait_for(there, timeout, f"rollout {stage} of {candidate} on {worker.url}")


def _with_prefix(prefix: str, count: int) -> Callable[[list[ConsumedRecord]], bool]:
    def done(records: list[ConsumedRecord]) -> bool:
        return len({r.json()["id"] for r in records if r.json()["id"].startswith(prefix)}) >= count

    return done


def _by_id(records: list[ConsumedRecord], prefix: str) -> dict[str, ConsumedRecord]:
    return {r.json()["id"]: r for r in records if r.json()["id"].startswith(prefix)}


def _on_each(
    pair: list[WorkerProcess], probe: Callable[[WorkerProcess], bool], timeout: float, what: str
) -> None:
    for worker in pair:
        wait_for(functools.partial(probe, worker), timeout, f"{what} on {worker.url}")


def _publish(settings: Settings, model: Path, version: str, *flags: str) -> str:
    args = ["publish", str(model), "--name", "wine", "--version", version, *flags]
    return run_cli(settings, *args).stdout


def _roll_out(settings: Settings, model: Path, version: str, rollout: RolloutStart) -> None:
    """As ``_publish`` with ``--shadow``/``--canary``, in this process: for the tests whose
    subject is the rollout, not the command that starts it (the first test runs that)."""
    publish_file(settings, model, "wine", version, rollout=rollout)


@pytest.fixture
def two_workers(
    make_settings: Callable[..., Settings], workers: Workers, wine_worker: WineWorker
) -> tuple[Settings, list[WorkerProcess]]:
    """Two workers of one group serving wine v1 (ready)."""
    settings, first = wine_worker()
    second = workers(settings.model_copy(update={"http_port": make_settings().http_port}))
    second.wait_ready()
    return settings, [first, second]


def test_shadow_survives_a_restart_and_abort_returns_everything_to_serving(
    wine_worker: WineWorker, workers: Workers, trained: dict[str, Path]
) -> None:
    settings, worker = wine_worker()
    out = _publish(settings, trained["wine-forest"], "2", "--shadow", "--why", "try the forest")
    assert "shadow" in out
    _wait_stage(worker, "shadow")

    asyncio.run(produce_records(settings, count=400, id_prefix="s"))
    scored = _by_id(consume(settings, settings.scored_topic, until=_with_prefix("s-", 400)), "s-")
    shadow = _by_id(consume(settings, settings.shadow_topic, until=_with_prefix("s-", 400)), "s-")
    assert set(shadow) == set(scored) == {f"s-{i}" for i in range(400)}
    assert {r.json()["version"] for r in scored.values()} == {"1"}, "serving stays on v1"
    assert {r.json()["version"] for r in shadow.values()} == {"2"}
    assert all(r.headers[HEADER_VERSION] == b"2" for r in shadow.values())
    assert all(shadow[i].key == scored[i].key == i.encode() for i in scored), "same keys"
    view = _rollout(worker)
    assert view["report"]["compared"] >= 400
    assert 0 <= view["report"]["agreement"] <= 1
    assert view["report"]["candidate_p99_ms"] is not None
    assert (view["who"].count("@"), view["why"]) == (1, "try the forest")

    assert worker.stop() == 0, worker.tail()
    worker = workers(settings)
    worker.wait_ready()
    assert _rollout(worker)["stage"] == "shadow", "ready only once the rollout is resumed"
    asyncio.run(produce_records(settings, count=100, id_prefix="r"))
    resumed = consume(settings, settings.shadow_topic, until=_with_prefix("r-", 100))
    assert {r.json()["version"] for r in _by_id(resumed, "r-").values()} == {"2"}

    assert "aborted" in run_cli(settings, "abort", "wine", "--why", "not now").stdout
    _wait_stage(worker, "aborted", timeout=60)
    asyncio.run(produce_records(settings, count=200, id_prefix="after"))
    after = consume(settings, settings.scored_topic, until=_with_prefix("after-", 200))
    assert {r.json()["version"] for r in _by_id(after, "after-").values()} == {"1"}
    # The shadow outputs of a batch are acknowledged before its scored ones are committed.
    assert not _by_id(
        consume(settings, settings.shadow_topic, until=lambda _: False, timeout=2), "after-"
    )
    history = worker.get("/models/wine/history").json()
    aborted = [h for h in history if h["status"] == "aborted"]
    assert [(h["version"], h["why"]) for h in aborted] == [("2", "not now")]
    assert "@" in aborted[0]["who"]
    assert run_cli(settings, "abort", "wine", check=False).returncode == 1, "nothing to abort"


def test_canary_routes_each_key_to_one_version_close_to_the_fraction(
    wine_worker: WineWorker, trained: dict[str, Path]
) -> None:
    settings, worker = wine_worker()
    _roll_out(settings, trained["wine-forest"], "2", RolloutStart(canary=0.3))
    _wait_stage(worker, "canary")
    rows = wine_rows()
    keys = [f"customer-{i}".encode() for i in range(1000)]
    items: list[tuple[bytes | None, bytes | None]] = [
        (key, orjson.dumps({"id": f"c{n}-{i}", "model": "wine", "features": rows[i % len(rows)]}))
        for n in range(2)
        for i, key in enumerate(keys)
    ]
    send_raw(settings, settings.data_topic, items)
    records = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 2000)
    versions: dict[bytes | None, set[str]] = {}
    for r in records:
        versions.setdefault(r.key, set()).add(r.json()["version"])
    assert all(len(v) == 1 for v in versions.values()), "a key was scored by both versions"
    chosen = {k: v.pop() for k, v in versions.items()}
    assert chosen == {k: "2" if canary_share(k) < 0.3 else "1" for k in keys}
    share = sum(v == "2" for v in chosen.values()) / len(chosen)
    assert abs(share - 0.3) < 0.05, share
    assert worker.metric('hotswap_records_scored_total{model="wine",version="2"}') > 0
    assert worker.metric('hotswap_records_scored_total{model="wine",version="1"}') > 0


def test_promote_reaches_two_workers_within_seconds_and_survives_a_restart(
    two_workers: tuple[Settings, list[WorkerProcess]], workers: Workers, trained: dict[str, Path]
) -> None:
    settings, pair = two_workers

    first, second = pair

    def fleet_lists_both(worker: WorkerProcess, version: str) -> bool:
        fleet = worker.get("/fleet").json()
        serving = {w["id"]: w["models"].get("wine") for w in fleet["workers"]}
        urls = {w["http"] for w in fleet["workers"]}
        return (
            len(serving) == 2 and set(serving.values()) == {version}
            and urls == {first.url, second.url} and not fleet["disagreements"]
        )  # fmt: skip

    _on_each(pair, lambda w: fleet_lists_both(w, "1"), 60, "/fleet listing both")
    table = run_cli(settings, "status", "--fleet", "--url", first.url).stdout
    assert "2 live worker(s)" in table
    _roll_out(settings, trained["wine-forest"], "2", RolloutStart())  # --shadow
    for worker in pair:
        _wait_stage(worker, "shadow")

    assert "promoted" in run_cli(settings, "promote", "wine", "--why", "agrees").stdout
    _on_each(pair, lambda w: w.model_version("wine") == "2", 60, "v2")
    for worker in pair:
        _wait_stage(worker, "promoted", timeout=60)
    history = second.get("/models/wine/history").json()
    assert [(h["version"], h["why"]) for h in history if h["status"] == "promoted"] == [
        ("2", "agrees")
    ]
    _on_each(pair, lambda w: fleet_lists_both(w, "2"), 60, "/fleet showing v2")

    assert second.stop() == 0, second.tail()
    # Gone at once by its tombstone (not by its last heartbeat growing old): the stop wrote it.
    gone = second.settings.worker_id.encode()
    statuses = consume(
        settings,
        settings.status_topic,
        until=lambda rs: any(r.key == gone and r.value is None for r in rs),
    )
    assert any(r.key == gone and r.value is None for r in statuses), "no tombstone at the stop"
    wait_for(lambda: len(first.get("/fleet").json()["workers"]) == 1, 60, "a clean stop to show")
    again = workers(second.settings)
    again.wait_ready()
    assert again.model_version("wine") == "2"
    assert _rollout(again)["stage"] == "promoted"
    asyncio.run(produce_records(settings, count=300, id_prefix="p"))
    records = _by_id(consume(settings, settings.scored_topic, until=_with_prefix("p-", 300)), "p-")
    assert {r.json()["version"] for r in records.values()} == {"2"}

    def caught_up() -> bool:  # each heartbeat carries its worker's lag: all read now
        lags = [w["lag"] for w in first.get("/fleet").json()["workers"]]
        return len(lags) == 2 and lags == [0, 0]

    wait_for(caught_up, 60, "both workers reporting a lag of 0")


def test_two_workers_and_a_policy_make_exactly_one_automatic_decision(
    two_workers: tuple[Settings, list[WorkerProcess]], trained: dict[str, Path]
) -> None:
    settings, pair = two_workers
    policy = RolloutStart(promote_after=600, min_agreement=0.5, max_p99_ms=1000)  # --shadow
    _roll_out(settings, trained["wine-forest"], "2", policy)
    for worker in pair:
        _wait_stage(worker, "shadow")
    asyncio.run(produce_records(settings, count=1500, rate=1000, id_prefix="a"))
    _on_each(pair, lambda w: w.model_version("wine") == "2", 30, "v2")
    for worker in pair:
        _wait_stage(worker, "promoted", timeout=60)

    steps = [orjson.loads(m.value() or b"") for m in read_to_end(settings, settings.control_topic)]
    decisions = [s for s in steps if s["stage"] in {"promoted", "aborted"}]
    assert len(decisions) == 1, decisions
    decision = decisions[0]
    assert decision["stage"] == "promoted"
    assert decision["who"].startswith("hotswap-decider@")
    assert "compared" in decision["why"]
    assert decision["figures"]["compared"] >= 600
    models = [m for m in read_to_end(settings, settings.model_topic) if m.key() == b"wine"]
    assert [orjson.loads(m.value() or b"")["version"] for m in models] == ["1", "2"]
    for worker in pair:
        assert _rollout(worker)["decision"]["why"] == decision["why"]


def test_backtest_prints_a_report_and_writes_nothing(
    make_settings: Callable[..., Settings], trained: dict[str, Path]
) -> None:
    from scripts.harness import publish_file

    settings = make_settings()
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    asyncio.run(produce_records(settings, count=300, id_prefix="b"))
    args = ["backtest", str(trained["wine-forest"]), "--name", "wine", "--version", "f"]
    report = orjson.loads(run_cli(settings, *args, "--count", "200", "--json").stdout)
    assert (report["serving"], report["candidate"], report["records"]) == ("1", "f", 200)
    assert report["compared"] == 200
    assert 0 <= report["agreement"] <= 1
    assert report["mean_abs_diff"] is not None
    table = run_cli(settings, *args, "--from-offset", "0", "--count", "1000").stdout
    assert "agreement" in table
    assert "300" in table, "from offset 0: every record of the topic"
    for topic in (settings.scored_topic, settings.shadow_topic, settings.dead_letter_topic):
        assert consume(settings, topic, until=lambda _: False, timeout=2) == [], topic
