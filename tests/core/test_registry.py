"""The registry: make-before-break swaps, checks before a swap, history, describe()."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pytest

from service.core import errors
from service.core.registry import BuildLimits, ModelRegistry, ServingModel
from service.core.runtime import ModelRuntime, load_runtime
from tests.models import BuiltModel, MessageFactory


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """ids of runtimes whose close() ran; every runtime the registry loads is tracked."""
    calls: list[int] = []

    def load(
        fmt: str, artifact: bytes, *, metadata: dict[str, Any], **options: Any
    ) -> ModelRuntime:
        runtime = load_runtime(fmt, artifact, metadata=metadata, **options)
        real_close = runtime.close

        def close() -> None:
            calls.append(id(runtime))
            real_close()

        monkeypatch.setattr(runtime, "close", close)
        return runtime

    monkeypatch.setattr("service.core.registry.load_runtime", load)
    return calls


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry(limits=BuildLimits(max_bytes=10_000_000, fetch_timeout=2, warmup_rows=4))


def _serve(registry: ModelRegistry, make_message: MessageFactory, **kw: Any) -> ServingModel:
    model = registry.build(make_message(**kw))
    registry.install(model)
    return model


def _labels(model: ServingModel, rows: list[list[float]]) -> list[Any]:
    out = model.runtime.predict(np.asarray(rows, dtype=np.float32))
    return list(out["label"].tolist())


def test_build_and_install_v1_then_v2(
    registry: ModelRegistry, make_message: MessageFactory, wine_model: BuiltModel, closed: list[int]
) -> None:
    assert registry.get("wine") is None
    assert not registry.known("wine")
    v1 = registry.build(make_message(version="1"))
    assert registry.get("wine") is None  # building touches nothing that serves
    assert registry.install(v1) is None
    assert registry.get("wine") is v1
    assert closed == []

    v2 = registry.build(make_message(version="2"))
    assert registry.get("wine") is v1
    assert registry.install(v2) is v1
    assert registry.get("wine") is v2
    assert closed == [id(v1.runtime)]
    assert _labels(v2, wine_model.sample_inputs) == wine_model.sample_labels

    history = registry.history("wine")
    assert history is not None
    assert [(h.version, h.status) for h in history] == [
        ("1", "accepted"),
        ("1", "retired"),
        ("2", "accepted"),
    ]
    assert all(h.sha256 == v2.message.sha256 for h in history)
    assert [m.version for m in registry.models()] == ["2"]
    assert v2.load_ms > 0


def test_sha256_mismatch_leaves_serving_model(
    registry: ModelRegistry, make_message: MessageFactory, wine_model: BuiltModel
) -> None:
    v1 = _serve(registry, make_message, version="1")
    bad = make_message(version="2", sha256="0" * 64)
    with pytest.raises(errors.ChecksumMismatch):
        registry.build(bad)
    assert registry.get("wine") is v1
    assert _labels(v1, wine_model.sample_inputs) == wine_model.sample_labels
    history = registry.history("wine")
    assert history is not None
    assert [h.status for h in history] == ["accepted"]


def test_width_change_rejected_and_candidate_closed(
    registry: ModelRegistry,
    make_message: MessageFactory,
    four_feature_model: BuiltModel,
    closed: list[int],
) -> None:
    v1 = _serve(registry, make_message, version="1")
    with pytest.raises(errors.IncompatibleInputs, match="takes 4 features"):
        registry.build(make_message(four_feature_model, version="2"))
    assert registry.get("wine") is v1
    assert len(closed) == 1  # the candidate, not v1
    assert v1.runtime.signature.width == 13


def test_width_change_allowed_with_schema_change(
    registry: ModelRegistry, make_message: MessageFactory, four_feature_model: BuiltModel
) -> None:
    _serve(registry, make_message, version="1")
    meta = {**four_feature_model.metadata(), "schema_change": True}
    v2 = _serve(registry, make_message, model=four_feature_model, version="2", metadata=meta)
    current = registry.get("wine")
    assert current is v2
    assert current.runtime.signature.width == 4


def test_schema_change_must_be_true_not_truthy(
    registry: ModelRegistry, make_message: MessageFactory, four_feature_model: BuiltModel
) -> None:
    _serve(registry, make_message, version="1")
    meta = {**four_feature_model.metadata(), "schema_change": "yes"}
    with pytest.raises(errors.IncompatibleInputs):
        registry.build(make_message(four_feature_model, version="2", metadata=meta))


def test_renamed_features_rejected(
    registry: ModelRegistry, make_message: MessageFactory, wine_model: BuiltModel
) -> None:
    _serve(registry, make_message, version="1")
    meta = {**wine_model.metadata(), "feature_names": [f"f{i}" for i in range(13)]}
    with pytest.raises(errors.IncompatibleInputs, match="feature names"):
        registry.build(make_message(version="2", metadata=meta))


def test_other_model_names_are_independent(
    registry: ModelRegistry, make_message: MessageFactory, four_feature_model: BuiltModel
) -> None:
    _serve(registry, make_message, version="1")
    iris = _serve(registry, make_message, model=four_feature_model, name="iris", version="1")
    assert [m.name for m in registry.models()] == ["iris", "wine"]
    assert registry.get("iris") is iris


def test_warmup_with_wrong_labels_fails(
    registry: ModelRegistry, make_message: MessageFactory, wine_model: BuiltModel, closed: list[int]
) -> None:
    wrong = [(label + 1) % 3 for label in wine_model.sample_labels]
    meta = {
        **wine_model.metadata(),
        "samples": {"inputs": wine_model.sample_inputs, "labels": wrong},
    }
    with pytest.raises(errors.WarmupFailed, match="differ from published labels") as info:
        registry.build(make_message(metadata=meta))
    assert info.value.reason == "warmup_failed"
    assert registry.get("wine") is None
    assert len(closed) == 1


def test_warmup_with_malformed_samples_fails(
    registry: ModelRegistry, make_message: MessageFactory, wine_model: BuiltModel
) -> None:
    meta = {**wine_model.metadata(), "samples": {"inputs": [[1.0, 2.0, 3.0]], "labels": [0]}}
    with pytest.raises(errors.WarmupFailed):
        registry.build(make_message(metadata=meta))


def test_warmup_on_zeros_without_samples(
    registry: ModelRegistry, make_message: MessageFactory, wine_model: BuiltModel
) -> None:
    model = registry.build(make_message(metadata=wine_model.metadata(samples=False)))
    assert model.runtime.signature.width == 13


def test_reject_is_recorded(registry: ModelRegistry) -> None:
    registry.reject("wine", "3", errors.WarmupFailed("labels differ"), "ab" * 32)
    assert registry.known("wine")
    assert registry.get("wine") is None
    history = registry.history("wine")
    assert history is not None
    [entry] = history
    assert (entry.version, entry.status, entry.reason, entry.detail) == (
        "3",
        "rejected",
        "warmup_failed",
        "labels differ",
    )


def test_remove_unloads(
    registry: ModelRegistry, make_message: MessageFactory, closed: list[int]
) -> None:
    v1 = _serve(registry, make_message, version="1")
    assert registry.remove("wine") is v1
    assert registry.get("wine") is None
    assert registry.models() == []
    assert closed == [id(v1.runtime)]
    history = registry.history("wine")
    assert history is not None
    assert [(h.version, h.status) for h in history] == [("1", "accepted"), ("1", "removed")]
    assert registry.remove("wine") is None
    assert registry.remove("never-seen") is None
    assert registry.history("never-seen") is None


def test_describe(registry: ModelRegistry, make_message: MessageFactory) -> None:
    model = _serve(registry, make_message, version="4")
    model.stats.observe(2.0, 10)
    model.stats.observe(4.0, 6)
    view = registry.describe(model)
    documented = {
        "name",
        "version",
        "format",
        "description",
        "sha256",
        "since",
        "records_scored",
        "batches_scored",
        "latency_ms",
        "load_ms",
        "signature",
        "metadata",
    }
    assert documented <= set(view)
    assert (view["name"], view["version"], view["format"]) == ("wine", "4", "onnx")
    assert view["description"] == "wine v4"
    assert view["sha256"] == model.message.sha256
    assert isinstance(view["since"], datetime)
    assert (view["records_scored"], view["batches_scored"]) == (16, 2)
    assert set(view["latency_ms"]) == {"min", "mean", "max", "p99"}
    assert (view["latency_ms"]["min"], view["latency_ms"]["mean"]) == (2.0, 3.0)
    assert view["latency_ms"]["max"] == 4.0
    assert view["signature"]["width"] == 13
    assert view["signature"]["classes"] == (0, 1, 2)
    assert "samples" not in view["metadata"]
    assert view["metadata"]["classes"] == [0, 1, 2]
