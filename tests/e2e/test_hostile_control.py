"""Junk on the control and status topics, on a real broker, while two workers run a canary.

Signed rollouts (``HOTSWAP_VERIFY_KEY``, the decider with ``HOTSWAP_SIGNING_KEY``):
malformed, skewed, oversized, inconsistent and unsigned messages are refused
and counted; ``/fleet`` and ``status --fleet`` list only the real workers; a
restarted worker routes every key like the running one; the decider still
decides, and signs. And a worker whose heartbeats the broker refuses says so in
``/ready``'s detail and a metric, and stays ready.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

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
from scripts.localkafka import free_port
from service.core.rollout import canary_share
from service.core.settings import Settings
from service.core.signing import generate_keypair
from service.kafka.readtoend import read_to_end
from service.tools.produce import wine_rows

pytestmark = pytest.mark.integration


def _junk_control(v2: dict[str, object]) -> list[tuple[bytes | None, bytes | None]]:
    unsigned = {"name": "wine", "stage": "canary", "fraction": 1.0, "candidate": v2}
    junk: list[tuple[bytes | None, bytes | None]] = [
        (b"wine", orjson.dumps({"name": "wine", "stage": "promoted"})),
        (b"wine", orjson.dumps(unsigned)),
        (b"wine", orjson.dumps({**unsigned, "at": "2026-12-02T17:25:00"})),
        (b"wine", b"{not json"),
        (b"wine", orjson.dumps({**unsigned, "stage": "aborted", "signature": "AAAA"})),
    ]
    junk += [
        (f"ghost-{i}".encode(), orjson.dumps({"name": f"ghost-{i}", "stage": "promoted"}))
        for i in range(2000)
    ]
    return junk


def _junk_status(group: str) -> list[tuple[bytes | None, bytes | None]]:
    beat = {"id": "ghost", "host": "h", "http": "http://ghost:1", "group": group, "ready": True}
    return [
        (b"naive", orjson.dumps({**beat, "id": "naive", "last_seen": "2026-12-02T17:25:00"})),
        (b"lots", orjson.dumps({**beat, "id": "lots", "last_seen": "2026-12-02T17:25:00Z",
                                "rollouts": {"wine": {"stage": "canary",
                                                      "figures": {"compared": "lots"}}}})),
        (b"ghost", orjson.dumps({**beat, "last_seen": "2099-01-01T00:00:00Z"})),
        (b"big", orjson.dumps({**beat, "id": "big", "why": "x" * 400_000})),
    ]  # fmt: skip


def _json(value: bytes | None) -> dict[str, object]:
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _serves(worker: WorkerProcess, version: str) -> bool:
    return worker.model_version("wine") == version


def _stage(worker: WorkerProcess, stage: str) -> bool:
    return bool(worker.get("/models/wine/rollout").json().get("stage") == stage)


def _routes(settings: Settings, prefix: str, keys: list[bytes]) -> dict[bytes, str]:
    rows = wine_rows()
    items: list[tuple[bytes | None, bytes | None]] = [
        (k, orjson.dumps({"id": f"{prefix}-{i}", "model": "wine", "features": rows[i % 100]}))
        for i, k in enumerate(keys)
    ]
    send_raw(settings, settings.data_topic, items)

    def mine(records: list[ConsumedRecord]) -> bool:
        return len({r.json()["id"] for r in records if r.json()["id"].startswith(prefix)}) >= len(
            keys
        )

    records = consume(settings, settings.scored_topic, until=mine)
    return {r.key or b"": r.json()["version"] for r in records if r.json()["id"].startswith(prefix)}


def test_junk_changes_nothing_restarts_agree_and_the_decider_still_decides(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
    tmp_path: Path,
) -> None:
    key = tmp_path / "keys" / "publisher.key"
    public = generate_keypair(key)
    settings = make_settings(verify_key=str(public), signing_key=str(key))
    publish_file(settings, trained["wine-logreg"], "wine", "1", signing_key=key)
    first = workers(settings)
    second = workers(settings.model_copy(update={"http_port": free_port()}))
    first.wait_ready()
    second.wait_ready()
    canary = RolloutStart(canary=0.3, promote_after=500)  # `--canary 0.3 --promote-after 500`
    publish_file(settings, trained["wine-forest"], "wine", "2", signing_key=key, rollout=canary)
    for worker in (first, second):
        wait_for(functools.partial(_stage, worker, "canary"), 30, "canary")
    [start] = [
        orjson.loads(m.value() or b"") for m in read_to_end(settings, settings.control_topic)
    ]
    assert start["signature"]

    send_raw(settings, settings.control_topic, _junk_control(start["candidate"]))
    send_raw(settings, settings.status_topic, _junk_status(settings.app_id))
    assert second.stop() == 0, second.tail()
    second = workers(second.settings)
    second.wait_ready()

    ids = {first.settings.worker_id, second.settings.worker_id}
    for worker in (first, second):

        def only_real(w: WorkerProcess = worker) -> bool:
            fleet = w.get("/fleet").json()
            return {x["id"] for x in fleet["workers"]} == ids and not fleet["disagreements"]

        wait_for(only_real, 20, f"/fleet on {worker.url} with the two real workers only")
        rollout = worker.get("/models/wine/rollout").json()
        assert (rollout["stage"], rollout["fraction"], rollout["candidate"]) == ("canary", 0.3, "2")
        assert worker.get("/models/ghost-7/rollout").status_code == 404
        assert worker.get("/models/ghost-7/history").status_code == 404
        refused = [h["reason"] for h in worker.get("/models/wine/history").json()
                   if h["status"] == "rejected"]  # fmt: skip
        assert refused[-5:] == ["signature_invalid", "signature_invalid", "invalid_control",
                                "invalid_control", "signature_invalid"], refused  # fmt: skip
    table = run_cli(settings, "status", "--fleet", "--url", first.url).stdout
    assert "2 live worker(s)" in table
    assert first.metric('hotswap_control_rejections_total{reason="signature_invalid"}') >= 2000
    assert first.metric('hotswap_control_rejections_total{reason="invalid_status"}') >= 2
    assert first.metric('hotswap_control_rejections_total{reason="status_too_large"}') >= 1
    refused = first.get("/fleet").json()["refused_heartbeats"]
    assert refused["invalid_status"] >= 2, refused
    assert refused["status_too_large"] >= 1, refused
    # The well-formed ghost (last_seen in 2099) is unsigned, with a verify key set: refused
    # outright, so its made-up figures could never count in the decider's totals.
    assert refused["status_unsigned"] >= 1, refused

    keys = [f"customer-{i}".encode() for i in range(600)]  # ~180 compared: below 500
    routes = _routes(settings, "a", keys)
    assert routes == {k: "2" if canary_share(k) < 0.3 else "1" for k in keys}, "one routing"
    assert first.get("/models/wine/rollout").json()["stage"] == "canary", "not decided yet"

    _routes(settings, "b", keys * 2)  # ~360 more compared: the decider decides, signed
    for worker in (first, second):
        wait_for(functools.partial(_serves, worker, "2"), 30, "the automatic promotion")
    steps = [_json(m.value()) for m in read_to_end(settings, settings.control_topic)]
    decisions = [s for s in steps if str(s.get("who", "")).startswith("hotswap-decider@")]
    assert len(decisions) == 1
    assert (decisions[0]["stage"], bool(decisions[0].get("signature"))) == ("promoted", True)
    assert first.get("/ready").json()["detail"] == ""


def test_a_worker_whose_heartbeats_are_refused_says_so_and_stays_ready(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    settings = make_settings()
    admin = AdminClient({"bootstrap.servers": ",".join(settings.bootstrap_servers)})
    tiny = NewTopic(settings.status_topic, 1, 1, config={"max.message.bytes": "200"})
    for future in admin.create_topics([tiny]).values():
        future.result(30)
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = workers(settings)
    worker.wait_ready()

    def says_so() -> bool:
        ready = worker.get("/ready")
        return ready.status_code == 200 and "heartbeat not sent" in ready.json()["detail"]

    wait_for(says_so, 30, "/ready's detail naming the refused heartbeat")
    assert worker.metric("hotswap_heartbeat_failures_total") >= 1
