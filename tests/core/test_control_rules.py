"""The control topic keeps the model topic's promises: strict, consistent, signed, bounded.

Every class of bad control message (malformed, skewed, oversized,
inconsistent, unsigned, 10,000 junk ones) is refused with its reason, counted,
shown where it names a known model, and leaves a running worker and a
restarted one routing every record the same way.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.core import errors
from service.core import rollout as rollout_module
from service.core.control import RolloutControl
from service.core.control_rules import decide
from service.core.fleet import status_of
from service.core.messages import ModelMessage, parse_model_message
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.rollout import canary_share
from service.core.rollout_messages import (
    MAX_CONTROL_BYTES,
    ControlMessage,
    encode_control_message,
    parse_control_message,
)
from service.core.signing import ControlVerifier, sign_control
from tests.models import MessageFactory

KEYS = [f"customer-{i}".encode() for i in range(2000)]


def _step(candidate: ModelMessage | None, stage: str, name: str = "wine", **extra: Any) -> bytes:
    doc: dict[str, Any] = {"name": name, "stage": stage, **extra}
    if candidate is not None:
        doc["candidate"] = candidate
    return encode_control_message(ControlMessage.model_validate(doc))


def _reason(value: bytes, key: bytes | None = b"wine") -> str:
    with pytest.raises(errors.ControlRejected) as info:
        parse_control_message(key, value)
    return info.value.reason


# --- schemas ----------------------------------------------------------------------------------


def test_malformed_skewed_and_oversized_control_messages_are_refused_by_name(
    make_message: MessageFactory,
) -> None:
    good = orjson.loads(_step(make_message(version="2"), "shadow"))
    assert parse_control_message(b"wine", orjson.dumps(good)).stage == "shadow"
    assert _reason(b"{not json") == "invalid_control"
    assert _reason(orjson.dumps({**good, "at": "2026-12-02T17:25:00"})) == "invalid_control"
    assert _reason(orjson.dumps({**good, "stage": "promote"})) == "invalid_control"
    assert _reason(orjson.dumps({**good, "figures": {"compared": "lots"}})) == "invalid_control"
    assert _reason(orjson.dumps({**good, "figures": {"compared": -1}})) == "invalid_control"
    assert _reason(orjson.dumps({**good, "who": "x" * 201})) == "invalid_control"
    assert _reason(orjson.dumps(good), key=b"other") == "invalid_control"
    assert _reason(b" " * (MAX_CONTROL_BYTES + 1)) == "control_too_large"
    canary = {**good, "stage": "canary", "fraction": 1.5}
    assert _reason(orjson.dumps(canary)) == "invalid_control"


def test_version_labels_outside_the_safe_alphabet_are_refused(make_message: MessageFactory) -> None:
    message = make_message(version="2")
    doc = orjson.loads(message.model_dump_json())
    for label in ("a/b", "../x", ".", "", "v 1", "é", "x" * 201, "a?b", "a#b", "a%2Fb"):
        with pytest.raises(errors.InvalidModelMessage):
            parse_model_message(b"wine", orjson.dumps({**doc, "version": label}))
    for label in ("1", "v1.2.3", "2025-01-31_a+b", "rc:1@x~y"):
        assert parse_model_message(b"wine", orjson.dumps({**doc, "version": label})).version


# --- the rule -----------------------------------------------------------------------------------


def test_the_rule_refuses_what_the_model_topic_and_the_rollout_do_not_back(
    make_message: MessageFactory,
) -> None:
    v1, v2, v3 = (make_message(version=v) for v in "123")
    shadow = ControlMessage(name="wine", stage="shadow", candidate=v2)
    with pytest.raises(errors.ModelNotServing):
        decide(None, shadow, None)
    running = decide(None, shadow, v1)
    bare = ControlMessage(name="wine", stage="promoted")
    with pytest.raises(errors.NoRollout):
        decide(running, bare, v1)
    with pytest.raises(errors.NoRollout):
        decide(running, ControlMessage(name="wine", stage="promoted", candidate=v3), v1)
    promoted = decide(running, ControlMessage(name="wine", stage="promoted", candidate=v2), v1)
    assert (promoted.stage, promoted.start) == ("promoted", shadow)
    junk_abort = ControlMessage(name="wine", stage="aborted", candidate=v2)
    with pytest.raises(errors.CandidateIsServing):
        decide(promoted, junk_abort, v2)  # after the swap to v2: too late to abort it
    with pytest.raises(errors.NoRollout):
        decide(None, ControlMessage(name="wine", stage="promoted", candidate=v2), v1)
    record = decide(None, ControlMessage(name="wine", stage="promoted", candidate=v2), v2)
    assert record.stage == "promoted", "a promotion the model topic shows, its start compacted"


# --- running and restarted workers ---------------------------------------------------------


def _worker(make_message: MessageFactory) -> tuple[ModelRegistry, RolloutControl, Metrics]:
    registry = ModelRegistry()
    registry.install(registry.build(make_message(version="1")))
    metrics = Metrics()

    async def build(message: ModelMessage) -> ServingModel:
        return registry.build(message)

    return registry, RolloutControl(registry, metrics, build), metrics


def _feed(control: RolloutControl, steps: list[tuple[bytes, bytes | None]], replay: bool) -> None:
    async def run() -> None:
        for key, value in steps:
            await control.submit(key, value, replay=replay)
        if replay:
            await control.settle()

    asyncio.run(run())


def _routes(registry: ModelRegistry) -> dict[bytes, str]:
    """Which version each key's record goes to (what the scorer's router decides)."""
    serving = registry.get("wine")
    assert serving is not None
    rollout = registry.rollout("wine")
    routes: dict[bytes, str] = {}
    for key in KEYS:
        to_candidate = (
            rollout is not None
            and rollout.active()
            and rollout.stage != "shadow"
            and rollout.to_candidate(key, None)
        )
        chosen = rollout.candidate_version if to_candidate and rollout else None
        routes[key] = chosen or serving.version
    return routes


def test_running_and_restarted_workers_route_every_key_alike_whatever_the_junk(
    make_message: MessageFactory,
) -> None:
    v2 = make_message(version="2")
    w = b"wine"
    steps: list[tuple[bytes, bytes | None]] = [
        (w, _step(v2, "shadow")),
        (w, _step(v2, "canary", fraction=0.3)),
        (w, orjson.dumps({"name": "wine", "stage": "promoted"})),  # bare: the split of the issue
        (w, b"{junk"),
        (w, orjson.dumps({"name": "wine", "stage": "canary", "at": "2026-12-02T17:25:00"})),
        (w, _step(make_message(version="9"), "aborted")),  # not the candidate
        (b"ghost", _step(make_message(name="ghost", version="1"), "promoted", name="ghost")),
    ]
    running, live, live_metrics = _worker(make_message)
    _feed(live, steps, replay=False)
    restarted, replayed, _ = _worker(make_message)
    _feed(replayed, steps, replay=True)
    routes = _routes(running)
    assert routes == _routes(restarted)
    assert routes == {k: "2" if canary_share(k) < 0.3 else "1" for k in KEYS}, "canary holds"
    for registry in (running, restarted):
        rollout = registry.rollout("wine")
        assert rollout is not None
        assert (rollout.stage, rollout.control.fraction) == ("canary", 0.3)
        assert registry.rollout("ghost") is None
        assert not registry.known("ghost"), "a ghost model gets no history either"
        reasons = [h.reason for h in registry.history("wine") or [] if h.status == "rejected"]
        assert reasons == ["no_rollout", "invalid_control", "invalid_control", "no_rollout"]
    refused = live_metrics.render().decode()
    assert 'hotswap_control_rejections_total{reason="no_rollout"} 2.0' in refused
    assert 'hotswap_control_rejections_total{reason="model_not_serving"} 1.0' in refused

    # A real promotion (the model topic first), then a junk abort: both end on v2, no rollout.
    promote: list[tuple[bytes, bytes | None]] = [
        (w, _step(v2, "promoted", who="ann@h")),
        (w, _step(v2, "aborted")),
    ]
    for registry, control in ((running, live), (restarted, replayed)):
        registry.install(registry.build(v2))
        _feed(control, promote, replay=False)
    again, fresh, _ = _worker(make_message)
    again.install(again.build(v2))
    _feed(fresh, steps + promote, replay=True)
    for registry in (running, restarted, again):
        rollout = registry.rollout("wine")
        assert rollout is not None
        assert (rollout.stage, rollout.active()) == ("promoted", False)
        assert _routes(registry) == dict.fromkeys(KEYS, "2")
        last = [h.reason for h in registry.history("wine") or [] if h.status == "rejected"][-1]
        assert last == "candidate_is_serving", "the junk abort"


def test_a_promotion_the_model_topic_never_got_routes_alike_once_its_grace_is_over(
    make_message: MessageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-written ``promoted`` (no model-topic message) routes nothing once the grace ends."""
    v2 = make_message(version="2")
    steps: list[tuple[bytes, bytes | None]] = [
        (b"wine", _step(v2, "canary", fraction=0.5)),
        (b"wine", _step(v2, "promoted")),
    ]
    running, live, _ = _worker(make_message)
    _feed(live, steps, replay=False)
    restarted, replayed, _ = _worker(make_message)
    _feed(replayed, steps, replay=True)
    assert _routes(restarted) == dict.fromkeys(KEYS, "1"), "ended: the model topic's version"
    assert _routes(running) == dict.fromkeys(KEYS, "2"), "live: every record to it meanwhile"
    monkeypatch.setattr(rollout_module, "PROMOTION_GRACE", 0.0)
    assert _routes(running) == _routes(restarted)

    # A rollback after the promotion: both serve what the model topic says.
    for registry in (running, restarted):
        registry.install(registry.build(v2))
        registry.install(registry.build(make_message(version="1")))
    assert _routes(running) == _routes(restarted) == dict.fromkeys(KEYS, "1")


def test_ten_thousand_junk_control_messages_leave_bounded_state_and_heartbeats(
    make_message: MessageFactory,
) -> None:
    registry, control, metrics = _worker(make_message)
    junk: list[tuple[bytes, bytes | None]] = []
    for i in range(10_000):
        name = f"ghost-{i}"
        kind = i % 4
        if kind == 0:
            value = orjson.dumps({"name": name, "stage": "promoted"})
        elif kind == 1:
            value = orjson.dumps({"name": "wine", "stage": "aborted"})  # and a key mismatch
        elif kind == 2:
            value = orjson.dumps({"name": name, "stage": "promoted", "at": "2099-01-01T00:00:00"})
        else:
            value = b"\xff" * 100
        junk.append((name.encode(), value))
    _feed(control, junk, replay=False)
    assert registry.rollouts() == []
    assert [m.name for m in registry.models()] == ["wine"]
    assert not any(registry.known(f"ghost-{i}") for i in range(10_000))
    text = metrics.render().decode()
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hotswap_control_rejections_total{")
    )
    assert counted == 10_000
    heartbeat = status_of(registry, id="w", host="h", http="http://h:1", group="g")
    assert len(heartbeat.model_dump_json()) < 2_000


# --- signatures ------------------------------------------------------------------------------


def test_control_messages_must_be_signed_by_the_publishers_key(
    make_message: MessageFactory,
) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    verify = ControlVerifier(key.public_key())
    step = ControlMessage(
        name="wine", stage="canary", fraction=0.2, candidate=make_message(version="2"),
        at=datetime(2026, 12, 2, 17, 25, 0, 123456, tzinfo=UTC), who="ann@h",
    )  # fmt: skip
    signed = sign_control(step, key)
    verify(parse_control_message(b"wine", encode_control_message(signed)))  # survives the wire
    with pytest.raises(errors.SignatureInvalid, match="unsigned"):
        verify(step)
    with pytest.raises(errors.SignatureInvalid):
        verify(sign_control(step, other))
    for change in ({"fraction": 1.0}, {"stage": "shadow"}, {"who": "mallory"}):
        with pytest.raises(errors.SignatureInvalid):
            verify(signed.model_copy(update=change))

    registry = ModelRegistry()
    registry.install(registry.build(make_message(version="1")))

    async def build(message: ModelMessage) -> ServingModel:
        return registry.build(message)

    control = RolloutControl(registry, Metrics(), build, verify)
    _feed(control, [(b"wine", encode_control_message(step))], replay=False)
    assert registry.rollout("wine") is None
    assert (registry.history("wine") or [])[-1].reason == "signature_invalid"
    _feed(control, [(b"wine", encode_control_message(signed))], replay=False)
    rollout = registry.rollout("wine")
    assert rollout is not None
    assert rollout.active()


def test_a_step_that_overtook_its_models_first_version_is_applied_when_it_serves(
    make_message: MessageFactory,
) -> None:
    """Two topics, two consumers: a canary may arrive before the model topic's first version."""
    registry = ModelRegistry()
    metrics = Metrics()

    async def build(message: ModelMessage) -> ServingModel:
        return registry.build(message)

    control = RolloutControl(registry, metrics, build)

    async def run() -> None:
        control.resubmit = lambda key, value: control.submit(key, value, replay=False)
        await control.submit(
            b"wine", _step(make_message(version="2"), "canary", fraction=0.3), replay=False
        )
        assert registry.rollout("wine") is None
        registry.install(registry.build(make_message(version="1")))
        control.model_changed()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if registry.rollout("wine") is not None:
                break

    asyncio.run(run())
    rollout = registry.rollout("wine")
    assert rollout is not None
    assert (rollout.stage, rollout.active()) == ("canary", True), "as a restarted worker has it"
    assert 'reason="model_not_serving"} 1.0' in metrics.render().decode(), "the refusal counted"
