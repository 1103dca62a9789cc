"""Label values from messages are bounded: junk names, endless versions, too many models."""

from __future__ import annotations

from service.core import errors
from service.core.metrics import OTHER_MODEL, RETIRED_VERSION, UNKNOWN_MODEL, Metrics
from service.core.registry import ModelRegistry
from tests.models import MessageFactory


def _series(metrics: Metrics) -> int:
    return sum(len(family.samples) for family in metrics.registry.collect())


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_ten_thousand_junk_names_add_no_series(make_message: MessageFactory) -> None:
    """What the model feed does for each bad message: reject in the registry, count it."""
    registry, metrics = ModelRegistry(), Metrics()
    registry.install(registry.build(make_message(version="1")))
    metrics.swapped("wine", "1", None)

    def reject(name: str) -> None:
        message = make_message(name=name, version="1", sha256="0" * 64)
        try:
            registry.build(message)
        except errors.ModelRejected as exc:
            registry.reject(name, message.version, exc)
            metrics.rejected(name, exc.reason)
            metrics.records_dead_lettered.labels("unknown_model").inc()  # a record naming it
        else:
            raise AssertionError("a message with a wrong sha256 was accepted")

    reject("junk-0")
    series, size = _series(metrics), len(metrics.render())
    for i in range(1, 10_000):
        reject(f"junk-{i}")
    assert _series(metrics) == series
    assert len(metrics.render()) < size + 32  # only the counters' digits grew
    assert (
        _value(
            metrics, "hotswap_model_rejections_total", model=UNKNOWN_MODEL, reason="sha256_mismatch"
        )
        == 10_000
    )
    assert "junk-" not in metrics.render().decode()


def test_served_names_keep_their_label() -> None:
    metrics = Metrics()
    assert metrics.model_label("wine") == UNKNOWN_MODEL
    metrics.rejected("wine", "warmup_failed")  # before it ever served
    metrics.swapped("wine", "1", None)
    metrics.rejected("wine", "warmup_failed")
    metrics.removed("wine", "1")  # a tombstone: it served, it keeps its name
    metrics.rejected("wine", "invalid_model")
    assert metrics.model_label("wine") == "wine"
    rejections = "hotswap_model_rejections_total"
    assert _value(metrics, rejections, model=UNKNOWN_MODEL, reason="warmup_failed") == 1
    assert _value(metrics, rejections, model="wine", reason="warmup_failed") == 1
    assert _value(metrics, rejections, model="wine", reason="invalid_model") == 1


def test_versions_of_one_model_are_bounded() -> None:
    metrics = Metrics(versions_per_model=3)
    old: str | None = None
    for i in range(1, 201):
        version = f"v{i}"
        metrics.swapped("wine", version, old)
        metrics.records_scored.labels(
            metrics.model_label("wine"), metrics.version_label("wine", version)
        ).inc()
        metrics.http_inferences.labels("wine", metrics.version_label("wine", version)).inc()
        if old is not None:  # a late batch of the version just replaced
            metrics.records_scored.labels("wine", metrics.version_label("wine", old)).inc()
        old = version
    scored = {
        s.labels["version"]
        for f in metrics.registry.collect()
        if f.name == "hotswap_records_scored"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert scored == {"v198", "v199", "v200"}
    assert metrics.version_label("wine", "v1") == RETIRED_VERSION
    assert _value(metrics, "hotswap_model_info", model="wine", version="v200") == 1
    assert _value(metrics, "hotswap_model_info", model="wine", version="v199") is None
    assert _value(metrics, "hotswap_model_swaps_total", model="wine") == 200

    # A rollback to a retired version gives it its label back.
    metrics.swapped("wine", "v1", "v200")
    assert metrics.version_label("wine", "v1") == "v1"
    assert _value(metrics, "hotswap_model_info", model="wine", version="v1") == 1


def test_models_past_the_cap_share_one_label() -> None:
    metrics = Metrics(max_model_labels=3)
    for i in range(10):
        metrics.swapped(f"m{i}", "1", None)
    labels = [metrics.model_label(f"m{i}") for i in range(10)]
    assert labels == ["m0", "m1", "m2"] + [OTHER_MODEL] * 7
    assert _value(metrics, "hotswap_model_swaps_total", model=OTHER_MODEL) == 7
    info = [
        s for f in metrics.registry.collect() if f.name == "hotswap_model_info" for s in f.samples
    ]
    assert len(info) == 3
    assert metrics.version_label("m9", "1") == RETIRED_VERSION
