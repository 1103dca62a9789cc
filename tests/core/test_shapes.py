"""Any record shape: coercion, dotted paths, the routes file and routed scoring (no broker)."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.core import errors
from service.core.outputs import DeadLetter, InputRecord, Scored
from service.core.registry import ModelRegistry
from service.core.routed import RoutedScorer
from service.core.routes import Route, Routes, load_routes
from service.core.scoring import Scorer
from service.core.shapes import coerce, features_of, lookup
from tests.models import BuiltModel, MessageFactory


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (2.5, 2.5),
        (True, 1.0),
        (False, 0.0),
        (" 12.5 ", 12.5),
        ("1e3", 1000.0),
        ("-7", -7.0),
    ],
)
def test_numbers_booleans_and_numeric_strings_coerce(value: Any, expected: float) -> None:
    assert coerce(value, "x") == expected


@pytest.mark.parametrize(
    "value",
    ["abc", "", "nan", "inf", math.nan, math.inf, -math.inf, [1.0], {"a": 1}, b"1", Decimal("NaN")],
)
def test_anything_else_is_a_bad_feature(value: Any) -> None:
    with pytest.raises(errors.BadFeature) as caught:
        coerce(value, "amount")
    assert caught.value.reason == "bad_feature"
    assert "amount" in caught.value.detail


def test_dotted_paths_reach_nested_records_and_exact_names_win() -> None:
    doc = {"payment": {"amount": 3, "card": {"present": True}}, "a.b": 1, "a": {"b": 2}}
    assert lookup(doc, "payment.amount") == 3
    assert lookup(doc, "payment.card.present") is True
    assert lookup(doc, "a.b") == 1  # a field literally named "a.b"
    assert features_of(doc, ["payment.amount", "payment.card.present"]) == [3.0, 1.0]


@pytest.mark.parametrize("path", ["missing", "payment.missing", "payment.amount.deeper", "none"])
def test_absent_or_null_features_are_missing(path: str) -> None:
    with pytest.raises(errors.MissingFeature) as caught:
        lookup({"payment": {"amount": 1}, "none": None}, path)
    assert caught.value.reason == "missing_feature"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    return path


def test_routes_file_validates_and_routes_topics_and_patterns(tmp_path: Path) -> None:
    routes = load_routes(
        _write(
            tmp_path,
            "routes:\n  - topic: payments\n    model: fraud\n    output: scored.payments\n"
            '    mode: enrich\n  - pattern: "payments\\\\..*"\n    model: other\n    output: o\n',
        )
    )
    assert routes.subscriptions == ["payments", "^(payments\\..*)$"]
    assert routes.outputs == ["scored.payments", "o"]
    first = routes.for_topic("payments")
    assert first is not None
    assert (first.model, first.mode) == ("fraud", "enrich")
    eu = routes.for_topic("payments.eu")
    assert eu is not None
    assert (eu.model, eu.mode) == ("other", "envelope")
    assert routes.for_topic("paymentsX") is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("routes:\n  - model: m\n    output: o\n", "exactly one of `topic` or `pattern`"),
        ("routes:\n  - topic: t\n    model: m\n", "routes.0.output"),
        ("routes:\n  - topic: t\n    model: ''\n    output: o\n", "routes.0.model"),
        ("routes:\n  - topic: t\n    model: m\n    output: o\n    mode: fast\n", "routes.0.mode"),
        ("routes:\n  - topic: t\n    model: m\n    output: o\n    extra: 1\n", "routes.0.extra"),
        ('routes:\n  - pattern: "("\n    model: m\n    output: o\n', "regular expression"),
        ("routes: []\n", "routes"),
        ("routes: [\n", "not YAML"),
        ('routes:\n  - pattern: "in.*"\n    model: m\n    output: in.scored\n', "also read by"),
    ],
)
def test_a_bad_routes_file_is_refused_with_the_field_named(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(errors.RoutesInvalid) as caught:
        load_routes(_write(tmp_path, text))
    assert named in str(caught.value)
    assert "HOTSWAP_ROUTES=" in str(caught.value)


def test_a_pattern_reads_whole_topic_names_only_as_librdkafka_is_told(tmp_path: Path) -> None:
    """librdkafka *searches* names with a ``^`` subscription: unanchored at the end, a
    pattern for ``payments.eu`` read ``payments.eu.scored``, the route's own output."""
    text = (
        'routes:\n  - pattern: "payments\\\\.(eu|us)"\n    model: m\n'
        "    output: payments.eu.scored\n"
    )
    routes = load_routes(_write(tmp_path, text))
    (subscription,) = routes.subscriptions
    assert subscription == "^(payments\\.(eu|us))$"
    searched = [t for t in ("payments.eu", "payments.us", "payments.eu.scored", "xpayments.eu")
                if re.search(subscription, t)]  # fmt: skip
    assert searched == ["payments.eu", "payments.us"]
    anchored = 'routes:\n  - pattern: "^in$"\n    model: m\n    output: o\n'
    assert load_routes(_write(tmp_path, anchored)).subscriptions == ["^(in)$"]


def test_a_route_may_not_read_a_topic_the_worker_writes(tmp_path: Path) -> None:
    text = 'routes:\n  - pattern: "payments\\\\..*"\n    model: m\n    output: out\n'
    with pytest.raises(errors.RoutesInvalid, match=r"'payments\.dlq', which the worker writes"):
        load_routes(_write(tmp_path, text), written=["scored", "payments.dlq"])
    assert load_routes(_write(tmp_path, text), written=["scored"]).outputs == ["out"]


def test_a_missing_routes_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.RoutesInvalid, match="cannot read"):
        load_routes(tmp_path / "nope.yaml")


def test_routed_records_of_any_shape_are_scored_by_their_topics_model(
    four_feature_model: BuiltModel, make_message: MessageFactory
) -> None:
    registry = ModelRegistry()
    names = ["sepal.length", "sepal.width", "petal_length", "petal_width"]
    meta = {**four_feature_model.metadata(samples=False), "feature_names": names}
    registry.install(registry.build(make_message(four_feature_model, name="iris", metadata=meta)))
    routes = Routes(
        [
            Route(topic="in", model="iris", output="out", mode="enrich"),
            Route(topic="env", model="iris", output="env.out", mode="envelope"),
            Route(topic="ghost", model="nobody", output="x"),
        ]
    )
    scorer = RoutedScorer(
        Scorer(registry, max_record_bytes=10_000), routes, max_record_bytes=10_000
    )
    row = four_feature_model.sample_inputs[0]
    nested = {"sepal": {"length": row[0], "width": str(row[1])}, "petal_length": row[2]}
    records = [
        InputRecord(b"a", orjson.dumps({**nested, "petal_width": row[3]}), "in", 0, 0),
        InputRecord(b"b", orjson.dumps({**nested, "petal_width": True}), "in", 0, 1),
        InputRecord(b"c", orjson.dumps(nested), "in", 0, 2),
        InputRecord(b"d", orjson.dumps({**nested, "petal_width": "wide"}), "in", 0, 3),
        InputRecord(b"e", orjson.dumps({"id": 9, "features": row}), "env", 1, 0),
        InputRecord(b"f", b"[1, 2]", "in", 0, 4),
        InputRecord(b"g", orjson.dumps({"features": row}), "ghost", 0, 0),
    ]
    outputs = {o.key: o for o in scorer.score(records).outputs}
    a = outputs[b"a"]
    assert isinstance(a, Scored)
    assert (a.topic, a.enrich) == ("out", True)
    prediction = orjson.loads(a.value)
    assert prediction["label"] == four_feature_model.sample_labels[0]
    assert set(prediction) == {"model", "version", "label", "probabilities"}
    assert isinstance(outputs[b"b"], Scored)
    reasons = {k: o.reason for k, o in outputs.items() if isinstance(o, DeadLetter)}
    assert reasons == {
        b"c": "missing_feature",
        b"d": "bad_feature",
        b"f": "not_an_object",
        b"g": "unknown_model",
    }
    e = outputs[b"e"]
    assert isinstance(e, Scored)
    assert (e.topic, e.enrich) == ("env.out", False)
    envelope = orjson.loads(e.value)
    assert envelope["id"] == 9
    assert envelope["label"] == four_feature_model.sample_labels[0]


def test_the_worker_refuses_a_bad_routes_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    monkeypatch.setenv("HOTSWAP_ROUTES", str(_write(tmp_path, "routes:\n  - topic: t\n")))
    assert main(["worker"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: HOTSWAP_ROUTES=")
    assert "routes.0.output: Field required" in err
    assert len(err.splitlines()) == 1
