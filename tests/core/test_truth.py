"""Rollouts judged by the truth: pairs recorded, figures totalled, the policy applied."""

from __future__ import annotations

from service.core.quality import Sums
from service.core.rollout import evaluate
from service.core.rollout_messages import RolloutFigures, RolloutPolicy
from service.core.truth import TruthFigures, judge


def truth(n: int, serving_right: int, candidate_right: int) -> TruthFigures:
    return TruthFigures.of(Sums(n=n, correct=serving_right), Sums(n=n, correct=candidate_right))


def test_nothing_is_decided_before_min_labels() -> None:
    assert judge(100, 0.01, None) is None
    assert judge(100, 0.01, truth(99, 99, 0)) is None


def test_a_worse_candidate_is_worse_and_an_equal_one_is_not() -> None:
    worse = judge(100, 0.02, truth(100, 95, 80))
    assert worse is not None
    assert worse[0]
    assert "serving 0.9500, candidate 0.8000" in worse[1]
    same = judge(100, 0.02, truth(100, 95, 94))
    assert same is not None
    assert not same[0]


def test_regressors_compare_rmse() -> None:
    serving = Sums(n=4, sq_err=4.0, regression=True)  # rmse 1
    candidate = Sums(n=4, sq_err=16.0, regression=True)  # rmse 2
    verdict = judge(4, 0.5, TruthFigures.of(serving, candidate))
    assert verdict is not None
    assert verdict[0]
    assert "rmse" in verdict[1]


def test_policy_waits_for_labels_then_aborts_or_promotes() -> None:
    policy = RolloutPolicy(promote_after=1, min_labels=50, max_quality_loss=0.05)
    assert evaluate(policy, RolloutFigures(compared=500)) is None
    bad = evaluate(policy, RolloutFigures(compared=500, truth=truth(50, 49, 30)))
    assert bad is not None
    assert bad.outcome == "aborted"
    assert "quality" in bad.why
    good = evaluate(policy, RolloutFigures(compared=500, truth=truth(50, 45, 46)))
    assert good is not None
    assert good.outcome == "promoted"


def test_truth_figures_total_across_workers_and_survive_json() -> None:
    a = RolloutFigures(compared=10, truth=truth(10, 9, 8))
    b = RolloutFigures.model_validate_json(
        RolloutFigures(compared=5, truth=truth(5, 5, 1)).model_dump_json()
    )
    total = a.plus(b)
    assert total.truth is not None
    report = total.report()["truth"]
    assert report["labelled"] == 15
    assert report["serving"]["accuracy"] == round(14 / 15, 6)
    assert report["candidate"]["accuracy"] == 0.6
    assert RolloutFigures(compared=1).plus(a).truth == a.truth
