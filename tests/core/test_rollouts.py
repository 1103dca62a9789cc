"""Rollouts in the transport-free core: canary routing, shadow scoring, comparison, policy."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np
import orjson
import pytest

from service.core.control import RolloutControl
from service.core.messages import ModelMessage, encode_model_message
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.rollout import Comparison, Rollout, canary_share, compare_outputs, evaluate
from service.core.rollout_messages import (
    ControlMessage,
    RolloutFigures,
    RolloutPolicy,
    encode_control_message,
)
from service.core.runtime import Signature, TensorSpec
from service.core.scoring import InputRecord, Scored, Scorer
from tests.models import WINE_SAMPLE_INDEX, BuiltModel, MessageFactory


@pytest.fixture(scope="session")
def stump_model() -> BuiltModel:
    """A depth-1 tree on wine: same inputs as ``wine_model``, often a different label."""
    from sklearn.datasets import load_wine
    from sklearn.tree import DecisionTreeClassifier

    from service.core.convert import sklearn_to_onnx

    wine = load_wine()
    estimator = DecisionTreeClassifier(max_depth=1, random_state=0).fit(wine.data, wine.target)
    rows = wine.data[WINE_SAMPLE_INDEX].astype(np.float32)
    converted = sklearn_to_onnx(estimator, rows)
    assert converted.classes is not None
    assert converted.sample_labels is not None
    return BuiltModel(
        converted.onnx, list(wine.feature_names), converted.classes, rows.tolist(),
        converted.sample_labels,
    )  # fmt: skip


def _rollout(
    registry: ModelRegistry, candidate: ModelMessage, stage: str = "shadow", fraction: float = 0
) -> Rollout:
    control = ControlMessage.model_validate(
        {"name": candidate.name, "stage": stage, "fraction": fraction, "candidate": candidate}
    )
    rollout = Rollout(control, candidate=registry.build(candidate))
    registry.begin_rollout(rollout)
    return rollout


def _records(rows: list[list[float]], n: int, prefix: str = "r") -> list[InputRecord]:
    return [
        InputRecord(
            key=f"{prefix}-{i}".encode(),
            value=orjson.dumps(
                {"id": f"{prefix}-{i}", "model": "wine", "features": rows[i % len(rows)]}
            ),
            topic="records",
            partition=i % 4,
            offset=i,
        )
        for i in range(n)
    ]


@pytest.fixture
def serving(make_message: MessageFactory) -> ModelRegistry:
    registry = ModelRegistry()
    registry.install(registry.build(make_message(version="1")))
    return registry


# --- canary routing --------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 0.9])
def test_canary_share_is_within_a_few_percent_of_the_fraction_over_20k_keys(
    fraction: float,
) -> None:
    keys = [f"customer-{i}".encode() for i in range(20_000)]
    share = sum(canary_share(k) < fraction for k in keys) / len(keys)
    assert abs(share - fraction) < 0.015, share


def test_canary_share_is_a_stable_hash_not_pythons_salted_one() -> None:
    # Fixed values: the same on every worker, in every process, for ever.
    assert canary_share(b"") == pytest.approx(0.893167516, abs=1e-9)
    assert canary_share(b"customer-1") == canary_share(b"customer-1")
    assert 0 <= canary_share(b"\xff" * 100) < 1


def test_canary_is_sticky_per_key_across_batches_and_orders(
    serving: ModelRegistry, make_message: MessageFactory, stump_model: BuiltModel
) -> None:
    rollout = _rollout(serving, make_message(stump_model, version="2"), "canary", 0.3)
    scorer = Scorer(serving, max_record_bytes=10_000)
    records = _records(make_message().metadata["samples"]["inputs"], 4000)

    def versions(batches: list[list[InputRecord]]) -> dict[bytes | None, str]:
        seen: dict[bytes | None, str] = {}
        for batch in batches:
            for out in scorer.score(batch).outputs:
                assert isinstance(out, Scored)
                assert not out.shadow
                assert orjson.loads(out.value)["version"] == out.version
                seen[out.key] = out.version
        return seen

    first = versions([records[i : i + 500] for i in range(0, 4000, 500)])
    shuffled = random.Random(3).sample(records, len(records))
    second = versions([shuffled[i : i + 137] for i in range(0, 4000, 137)])
    assert first == second, "a key changed version between two passes"
    share = sum(v == "2" for v in first.values()) / len(first)
    assert abs(share - 0.3) < 0.03, share
    # The candidate's rows were compared with what the serving version said for them.
    assert rollout.comparison.compared == 2 * sum(v == "2" for v in first.values())


def test_canary_without_a_key_routes_by_record_id(
    serving: ModelRegistry, make_message: MessageFactory
) -> None:
    _rollout(serving, make_message(version="2"), "canary", 0.5)
    scorer = Scorer(serving, max_record_bytes=10_000)
    rows = make_message().metadata["samples"]["inputs"]
    keyless = [
        InputRecord(None, orjson.dumps({"id": i, "model": "wine", "features": rows[0]}), "t", 0, i)
        for i in range(400)
    ]
    outputs = [o for o in scorer.score(keyless).outputs if isinstance(o, Scored)]
    got = {orjson.loads(o.value)["id"]: o.version for o in outputs}
    assert got == {i: "2" if canary_share(str(i).encode()) < 0.5 else "1" for i in range(400)}


# --- shadow ------------------------------------------------------------------------------


def test_shadow_scores_every_row_with_both_and_leaves_serving_outputs_unchanged(
    serving: ModelRegistry, make_message: MessageFactory, stump_model: BuiltModel
) -> None:
    records = _records(make_message().metadata["samples"]["inputs"], 90)
    scorer = Scorer(serving, max_record_bytes=10_000)
    before = scorer.score(records).outputs
    rollout = _rollout(serving, make_message(stump_model, version="2"))
    after = scorer.score(records).outputs

    main = [o for o in after if isinstance(o, Scored) and not o.shadow]
    shadow = [o for o in after if isinstance(o, Scored) and o.shadow]
    assert len(main) == len(shadow) == 90
    assert after[:90] == main, "the batch's own outputs come first, in input order"

    def doc(out: Any) -> dict[str, Any]:
        return {k: v for k, v in orjson.loads(out.value).items() if k != "scored_at"}

    assert [doc(o) for o in main] == [doc(o) for o in before]
    assert {o.version for o in main} == {"1"}
    assert {o.version for o in shadow} == {"2"}
    assert [o.key for o in shadow] == [r.key for r in records]
    assert [orjson.loads(o.value)["id"] for o in shadow] == [f"r-{i}" for i in range(90)]
    assert all(dict(o.headers)["hotswap-version"] == b"2" for o in shadow)
    figures = rollout.figures(serving.get("wine"))
    assert figures.compared == figures.candidate_rows == 90
    assert figures.agreement is not None
    assert figures.agreement < 1, "a stump and a logistic regression disagree on some wines"


def test_a_failing_candidate_counts_errors_and_serving_still_scores(
    serving: ModelRegistry, make_message: MessageFactory
) -> None:
    rollout = _rollout(serving, make_message(version="2"), "canary", 1.0)
    assert rollout.candidate is not None

    def broken(batch: Any) -> Any:
        raise RuntimeError("candidate blew up")

    rollout.candidate.runtime.predict = broken  # type: ignore[method-assign]
    outputs = Scorer(serving, max_record_bytes=10_000).score(_records([[1.0] * 13], 20)).outputs
    assert {o.version for o in outputs if isinstance(o, Scored)} == {"1"}
    assert len(outputs) == 20
    assert rollout.comparison.candidate_errors == 20


# --- comparison and policy ------------------------------------------------------------------


def _signature(label: bool = True) -> Signature:
    outputs = (
        TensorSpec("label", "tensor(int64)", (None,)),
        TensorSpec("p", "tensor(float)", (None, 2)),
    )
    return Signature(
        inputs=(TensorSpec("x", "tensor(float)", (None, 2)),),
        outputs=outputs if label else (TensorSpec("y", "tensor(float)", (None,)),),
        width=2,
        label_output="label" if label else None,
        probability_output="p" if label else None,
    )


def test_comparison_figures_on_a_known_pair() -> None:
    sig = _signature()
    a = {
        "label": np.array([0, 1, 1, 0]),
        "p": np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [1, 0]]),
    }
    b = {
        "label": np.array([0, 1, 0, 0]),
        "p": np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [1, 0]]),
    }
    into = Comparison()
    compare_outputs(sig, a, sig, b, 4, into)
    figures = into.figures(None, None)
    assert figures.compared == 4
    assert figures.agreement == 0.75
    # Per row, the mean |a - b| over both classes: 0.2, 0, 0.2, 0.
    assert figures.mean_abs_diff == pytest.approx(0.1)


def test_comparison_of_regressors_has_a_difference_but_no_agreement() -> None:
    sig = _signature(label=False)
    into = Comparison()
    compare_outputs(sig, {"y": np.array([1.0, 2.0])}, sig, {"y": np.array([1.5, 1.0])}, 2, into)
    figures = into.figures(None, None)
    assert figures.agreement is None
    assert figures.mean_abs_diff == pytest.approx(0.75)


def test_labels_agree_as_text_whatever_their_type() -> None:
    sig = _signature()
    p = np.zeros((2, 2))
    into = Comparison()
    compare_outputs(sig, {"label": np.array(["1", "2"], dtype=object), "p": p},
                    sig, {"label": np.array([1, 3]), "p": p}, 2, into)  # fmt: skip
    assert (into.agreed, into.labelled) == (1, 2)


def _figures(compared: int, agreed: int, errors: int = 0, p99: float = 1.0) -> RolloutFigures:
    return RolloutFigures(
        compared=compared, agreed=agreed, labelled=compared, candidate_rows=compared,
        candidate_errors=errors, candidate_p99_ms=p99, abs_diff_sum=0.01 * compared,
    )  # fmt: skip


def test_policy_waits_then_promotes_or_aborts_with_the_figures_behind_it() -> None:
    policy = RolloutPolicy(promote_after=1000, min_agreement=0.98, max_p99_ms=5)
    assert evaluate(policy, _figures(999, 999)) is None
    promoted = evaluate(policy, _figures(1000, 990))
    assert promoted is not None
    assert promoted.outcome == "promoted"
    assert "compared 1000" in promoted.why
    assert "agreement 0.9900" in promoted.why
    low = evaluate(policy, _figures(1000, 900))
    assert low is not None
    assert (low.outcome, "agreement" in low.why.split(":")[1]) == ("aborted", True)
    slow = evaluate(policy, _figures(2000, 2000, p99=9.5))
    assert slow is not None
    assert slow.outcome == "aborted"
    assert "p99" in slow.why
    failing = evaluate(policy, _figures(2000, 2000, errors=5))
    assert failing is not None
    assert failing.outcome == "aborted"


def test_fleet_figures_add_up() -> None:
    total = _figures(100, 90, p99=2.0).plus(_figures(300, 300, p99=4.0))
    assert (total.compared, total.agreement, total.candidate_p99_ms) == (400, 0.975, 4.0)


# --- applying control messages --------------------------------------------------------------


def _control(candidate: ModelMessage, stage: str, **extra: Any) -> bytes:
    doc = {"name": candidate.name, "stage": stage, "candidate": candidate, **extra}
    return encode_control_message(ControlMessage.model_validate(doc))


def _apply(control: RolloutControl, *values: bytes, replay: bool = False) -> None:
    async def run() -> None:
        for value in values:
            await control.submit(b"wine", value, replay=replay)
        await control.settle()

    asyncio.run(run())


@pytest.fixture
def builds(serving: ModelRegistry) -> list[str]:
    return []


@pytest.fixture
def control(serving: ModelRegistry, builds: list[str]) -> RolloutControl:
    async def build(message: ModelMessage) -> ServingModel:
        builds.append(message.version)
        return serving.build(message)

    return RolloutControl(serving, Metrics(), build)


def test_replay_builds_only_the_newest_step_and_a_promoted_one_not_at_all(
    control: RolloutControl, serving: ModelRegistry, builds: list[str], make_message: MessageFactory
) -> None:
    v2 = make_message(version="2")
    serving.install(serving.build(v2))  # a promotion writes the model topic first: replayed first
    _apply(
        control,
        _control(v2, "shadow"),
        _control(v2, "canary", fraction=0.2),
        _control(v2, "promoted", who="ann@host", why="ok"),
        replay=True,
    )
    assert builds == []
    history = serving.history("wine") or []
    assert (history[-1].status, history[-1].who, history[-1].why) == ("promoted", "ann@host", "ok")


def test_a_new_stage_for_the_same_candidate_needs_no_rebuild_and_abort_releases_it(
    control: RolloutControl, serving: ModelRegistry, builds: list[str], make_message: MessageFactory
) -> None:
    v2 = make_message(version="2")
    _apply(control, _control(v2, "shadow"), _control(v2, "canary", fraction=0.2))
    rollout = serving.rollout("wine")
    assert rollout is not None
    assert (builds, rollout.stage, rollout.control.fraction) == (["2"], "canary", 0.2)
    _apply(control, _control(v2, "aborted", who="bob@h", why="slow"))
    assert rollout.candidate is None
    assert not rollout.active()
    assert [h.status for h in serving.history("wine") or []][-3:] == [
        "candidate", "candidate", "aborted"
    ]  # fmt: skip


def test_a_promoted_candidate_takes_every_record_until_its_swap_lands(
    control: RolloutControl, serving: ModelRegistry, make_message: MessageFactory
) -> None:
    v2 = make_message(version="2")
    _apply(control, _control(v2, "shadow"), _control(v2, "promoted"))
    rollout = serving.rollout("wine")
    assert rollout is not None
    assert rollout.active()
    outputs = Scorer(serving, max_record_bytes=10_000).score(_records([[1.0] * 13], 50)).outputs
    assert {o.version for o in outputs if isinstance(o, Scored)} == {"2"}
    serving.install(serving.build(v2))  # the model topic's message arrives
    assert not rollout.active()


def test_a_failing_candidate_is_rejected_in_history_and_in_the_rollout(
    control: RolloutControl, serving: ModelRegistry, make_message: MessageFactory
) -> None:
    bad = make_message(version="2", artifact=b"not onnx at all")
    _apply(control, _control(bad, "shadow"))
    rollout = serving.rollout("wine")
    assert rollout is not None
    assert rollout.rejected is not None
    assert rollout.rejected.startswith("invalid_onnx")
    entry = (serving.history("wine") or [])[-1]
    assert (entry.status, entry.reason, entry.version) == ("rejected", "invalid_onnx", "2")
    assert not rollout.active()


def test_a_control_message_embeds_the_model_message_as_published(
    make_message: MessageFactory,
) -> None:
    v2 = make_message(version="2")
    doc = orjson.loads(_control(v2, "shadow"))
    assert doc["candidate"] == orjson.loads(encode_model_message(v2))
    with pytest.raises(ValueError, match="needs a candidate"):
        ControlMessage(name="wine", stage="shadow")


async def _drained(control: RolloutControl) -> None:
    """Wait for the work ``model_changed`` started (builds again) to end."""
    while control._tasks:
        await asyncio.wait(set(control._tasks))


def _schema_change(
    make_message: MessageFactory, model: BuiltModel
) -> tuple[ModelMessage, ModelMessage]:
    """v2 changes the schema to 4 features; v3, a candidate of 4 features, follows it."""
    v2 = make_message(model, version="2", metadata={"schema_change": True})
    return v2, make_message(model, version="3")


def test_a_candidate_refused_as_incompatible_is_built_again_when_another_version_serves(
    control: RolloutControl,
    serving: ModelRegistry,
    builds: list[str],
    make_message: MessageFactory,
    four_feature_model: BuiltModel,
) -> None:
    """v2 changes the schema (4 features) and a canary of v3 (4 features) follows it at once:
    a running worker may read the canary before v2's swap lands and refuse v3 against v1; a
    restarted one replays v2 first and routes the canary. Both must end routing it."""
    v2, v3 = _schema_change(make_message, four_feature_model)

    async def run() -> None:
        await control.submit(b"wine", _control(v3, "canary", fraction=0.5), replay=False)
        refused = serving.rollout("wine")
        assert refused is not None
        assert (refused.rejected or "").startswith("incompatible_inputs")
        serving.install(serving.build(v2))  # the swap the step followed on the model topic
        control.model_changed()
        await _drained(control)

    asyncio.run(run())
    rollout = serving.rollout("wine")
    assert rollout is not None
    assert rollout.candidate is not None
    assert rollout.active()
    assert (rollout.stage, rollout.control.fraction) == ("canary", 0.5)
    assert builds == ["3", "3"]


def test_a_step_applied_while_a_refused_candidate_is_built_again_decides(
    serving: ModelRegistry, make_message: MessageFactory, four_feature_model: BuiltModel
) -> None:
    """The operator aborts the canary while its candidate is being built again: the abort
    stands, the candidate built meanwhile is dropped."""
    v2, v3 = _schema_change(make_message, four_feature_model)
    release, building = asyncio.Event(), asyncio.Event()
    builds: list[str] = []

    async def build(message: ModelMessage) -> ServingModel:
        builds.append(message.version)
        if len(builds) == 2:  # the build again, after v2 swapped in
            building.set()
            await release.wait()
        return serving.build(message)

    control = RolloutControl(serving, Metrics(), build)

    async def run() -> None:
        await control.submit(b"wine", _control(v3, "canary", fraction=0.5), replay=False)
        serving.install(serving.build(v2))
        control.model_changed()
        await building.wait()
        await control.submit(b"wine", _control(v3, "aborted", why="no"), replay=False)
        release.set()
        await _drained(control)

    asyncio.run(run())
    rollout = serving.rollout("wine")
    assert rollout is not None
    assert rollout.candidate is None
    assert not rollout.active()
    assert rollout.ended is not None
    assert rollout.ended.stage == "aborted"
