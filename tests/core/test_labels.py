"""The label join, the quality figures and the changelog replay, without a broker."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

from service.core.join_log import apply_event, labels_event, predictions_event, snapshot_event
from service.core.labels import PartitionJoin, join_key
from service.core.metrics import Metrics
from service.core.predictions import PredictionBlock
from service.core.quality import QualityBook, Sums, score_row
from service.core.quality_view import quality_report, update_quality_gauges

WINDOW = 100.0


def block(
    ids: list[str], labels: list[int], version: str = "1", at: float = 0.0
) -> PredictionBlock:
    probs = np.full((len(ids), 3), 0.1)
    for row, label in enumerate(labels):
        probs[row, label] = 0.8
    keys: list[bytes | None] = [i.encode() for i in ids]
    return PredictionBlock(
        "m", version, at, keys, list(ids), labels=list(labels), probs=probs, classes=["0", "1", "2"]
    )


def join(**kw: float) -> PartitionJoin:
    args: dict[str, float] = {"window": WINDOW, "quality_window": 3600.0, "max_bytes": 10**7}
    args.update(kw)
    return PartitionJoin(0, window=args["window"], quality_window=args["quality_window"],
                         max_bytes=int(args["max_bytes"]))  # fmt: skip


def figures(j: PartitionJoin, version: str = "1", now: float = 10.0) -> dict[str, object]:
    doc = quality_report([j.book], "m", now)
    return next(v for v in doc["versions"] if v["version"] == version)


def test_predictions_first_then_labels() -> None:
    j = join()
    j.predicted(block(["a", "b", "c", "d"], [0, 1, 2, 0]), 1.0)
    for rid, truth in zip("abcd", [0, 1, 0, 0]):
        j.labelled(rid.encode(), rid, truth, 2.0)
    got = figures(j)
    assert got["labelled"] == 4
    assert got["accuracy"] == 0.75
    assert j.counts["matched"] == 4


def test_predictions_waiting_for_labels_cost_the_collector_nothing() -> None:
    """The join holds a prediction for a day by default: millions of them. What it holds
    must not be walked by every collection of the older generations (~0.2 s per 500,000
    objects on the project's machine: the longest pauses at steady load)."""
    j = join()
    for n in range(50):
        j.predicted(block([f"r{n}-{i}" for i in range(4)], [0, 1, 2, 0]), 1.0)
    regressor = PredictionBlock("r", "1", 1.0, [b"v"], ["v"], values=np.asarray([2.5]))
    j.predicted(regressor, 1.0)
    gc.collect()
    assert len(j.blocks) == 51
    assert not [held for held in j.blocks.values() if gc.is_tracked(held)]
    j.labelled(b"r7-1", "r7-1", 1, 2.0)  # a held block still scores its rows
    j.labelled(b"v", "v", 2.0, 2.0)
    assert figures(j)["labelled"] == 1
    assert figures(j)["accuracy"] == 1.0
    assert j.counts["matched"] == 2
    # Records that became entries: labelled, labelled first, scored by a second version.
    j.labelled(b"early", "early", 2, 2.0)
    j.predicted(block(["r8-0", "r8-1"], [0, 0], version="2"), 2.0)
    j.labelled(b"r8-0", "r8-0", 0, 3.0)
    gc.collect()
    entries = [e for e in j.entries.values() if not isinstance(e, int)]
    assert len(entries) == 5
    assert not [e for e in entries if len(e) <= 8 and gc.is_tracked(e)]  # one version
    # Two versions: the second's block is held by the entries alone, and a collection
    # looks at it after them (its walk moves what only young objects hold to its end),
    # so they go at the next collection of their generation, never older.
    gc.collect()
    assert not [e for e in entries if gc.is_tracked(e)]
    assert figures(j, "2")["labelled"] == 1
    assert j.counts["matched"] == 3


@pytest.mark.parametrize(
    "labels",
    [
        [[1, 2], [3]],
        [[1, 2], [3, 4]],
        [{"a": 1}, None],
        [1, 2.5],
        [True, 2],
        ["a\x00", "b"],
        [2**63, -1],
        ["x" * 20_000, "y"],
    ],
)
def test_any_labels_a_block_carries_are_held_as_they_are(labels: list[object]) -> None:
    """Labels come from a model's output or from the changelog (JSON anyone can write):
    whatever they are, the held block keeps the same values, one per row, in no more
    room than the list took, and scoring compares them as text."""
    j = join()
    probs = np.full((2, 3), 0.2)
    j.predicted(PredictionBlock("m", "1", 1.0, [b"a", b"b"], ["a", "b"], labels, probs), 1.0)
    (held,) = j.blocks.values()
    assert held[2] is not None
    assert held[2].nbytes == 8 * len(labels)  # references, not a fixed-width copy
    j.labelled(b"a", "a", str(labels[0]), 2.0)  # the true class, as text
    j.labelled(b"b", "b", "never", 2.0)
    got = figures(j)
    assert got["labelled"] == 2
    assert got["accuracy"] == 0.5


def test_labels_first_wait_for_their_predictions() -> None:
    j = join()
    j.labelled(b"a", "a", 1, 1.0)
    j.labelled(b"b", "b", 2, 1.0)
    assert not j.book.versions
    j.predicted(block(["a", "b"], [1, 1]), 2.0)
    assert figures(j)["labelled"] == 2
    assert figures(j)["accuracy"] == 0.5
    assert j.counts["matched"] == 2


def test_duplicate_unmatched_late_and_unlabelled_are_counted() -> None:
    j = join()
    j.predicted(block(["a", "b"], [0, 0]), 0.0)
    j.labelled(b"a", "a", 0, 1.0)
    j.labelled(b"a", "a", 0, 2.0)  # duplicate
    j.labelled(b"x", "x", 0, 3.0)  # waits, then unmatched
    j.expire(WINDOW + 50)  # a, b and x are over their wait
    j.labelled(b"b", "b", 0, WINDOW + 60)  # late: its prediction expired
    assert j.counts["duplicate"] == 1
    assert j.counts["unmatched"] == 1
    assert j.counts["late"] == 1
    assert j.counts["unlabelled"] == 1  # b's prediction
    assert figures(j, now=WINDOW + 60)["labelled"] == 1


def test_a_label_after_the_window_is_late_even_before_the_sweep() -> None:
    j = join()
    j.predicted(block(["a"], [0]), 0.0)
    j.labelled(b"a", "a", 0, WINDOW + 1)
    assert j.counts["late"] == 1
    assert not j.book.versions


def test_the_same_batch_scored_twice_counts_once() -> None:
    j = join()
    j.predicted(block(["a"], [0]), 0.0)
    j.predicted(block(["a"], [0]), 0.5)  # a rewind: scored again
    j.labelled(b"a", "a", 0, 1.0)
    assert figures(j)["labelled"] == 1


def test_two_versions_make_a_pair() -> None:
    pairs: list[dict[str, Sums]] = []
    j = PartitionJoin(0, window=WINDOW, quality_window=3600, max_bytes=10**7,
                      on_pair=lambda model, versions: pairs.append(versions))  # fmt: skip
    j.predicted(block(["a", "b"], [0, 1], "1"), 0.0)
    j.predicted(block(["a", "b"], [0, 0], "2"), 0.0)
    j.labelled(b"a", "a", 0, 1.0)
    j.labelled(b"b", "b", 1, 1.0)
    assert len(pairs) == 2
    assert sum(p["1"].correct for p in pairs) == 2
    assert sum(p["2"].correct for p in pairs) == 1


def test_state_is_bounded_oldest_first() -> None:
    j = join(max_bytes=20_000)
    for n in range(200):
        j.predicted(block([f"r{n}"], [0]), float(n))
    assert j.bytes <= 20_000
    assert j.counts["evicted_prediction"] > 0
    assert join_key(b"r199", "r199") in j.entries, "the newest are kept"
    assert join_key(b"r0", "r0") not in j.entries, "the oldest go first"


def test_sliding_window_forgets_old_buckets_but_not_the_total() -> None:
    book = QualityBook(window=60.0)
    one = Sums(n=1, correct=1)
    book.add("m", "1", one, 0.0)
    book.add("m", "1", Sums(n=1, correct=0), 100.0)
    window, since, first = QualityBook.total([book], "m", 110.0)["1"]
    assert (window.n, window.accuracy) == (1, 0.0)
    assert (since.n, since.accuracy) == (2, 0.5)
    assert (first.n, first.accuracy) == (1, 1.0)


def test_log_loss_brier_and_regression_figures() -> None:
    s = Sums()
    probs = np.array([0.7, 0.2, 0.1])
    assert score_row(s, 0, 0, probs, {"0": 0, "1": 1, "2": 2}, None)
    assert s.log_loss == pytest.approx(-math.log(0.7))
    assert s.brier == pytest.approx(0.3**2 + 0.2**2 + 0.1**2)
    r = Sums()
    assert score_row(r, 3.0, None, None, None, 1.0)
    assert score_row(r, "5", None, None, None, 4.0)
    assert not score_row(r, "x", None, None, None, 4.0)
    assert r.figures() == {"labelled": 2, "mae": 1.5, "rmse": pytest.approx(math.sqrt(2.5))}


def test_changelog_replay_rebuilds_the_state_and_skips_applied_labels() -> None:
    live = join()
    scored = block(["a", "b", "c"], [0, 1, 2], at=1.0)
    live.predicted(scored, 1.0)
    events = [predictions_event(scored)]
    labels = [(0, b"a", "a", 0), (1, b"b", "b", 2)]
    for _, key, rid, label in labels:
        live.labelled(key, rid, label, 2.0)
    events.append(labels_event(2.0, labels, 2))
    events.append(labels_event(2.5, labels, 2))  # a zombie's copy of the same offsets
    events.append(snapshot_event(3.0, live))
    replayed = join()
    for raw in events:
        apply_event(replayed, raw)
    assert replayed.labels_next == 2
    assert figures(replayed) == figures(live)
    assert replayed.counts["duplicate"] == 0, "offsets already applied are skipped"
    replayed.labelled(b"c", "c", 2, 4.0)  # c's prediction survived the replay
    assert figures(replayed)["labelled"] == 3


def test_quality_gauges_are_bounded_to_labelled_versions() -> None:
    metrics = Metrics(versions_per_model=1)
    metrics.swapped("m", "2", None)
    j = join()
    j.predicted(block(["a"], [0], "1"), 0.0)
    j.predicted(block(["b"], [0], "2"), 0.0)
    j.labelled(b"a", "a", 0, 1.0)
    j.labelled(b"b", "b", 0, 1.0)
    update_quality_gauges(metrics, [j.book], 2.0)
    text = metrics.render().decode()
    assert 'hotswap_model_quality{metric="accuracy",model="m",version="2"} 1.0' in text
    assert 'version="1"' not in text, "a version without its own label has no series"


def test_keys_and_ids_never_pass_for_another_pair() -> None:
    """The join key is one bytes value: the key's length keeps the pairs apart."""
    pairs = [(b"a:1", "2"), (b"a", ":12"), (b"a:", "12"), (None, "a:12"), (b"", "a:12"), (b"x", 1)]
    keys = [join_key(k, i) for k, i in pairs]
    assert len(set(keys[:4])) == 4
    assert keys[3] == keys[4], "no key and an empty key are the same record key"
    assert join_key(b"x", 1) == join_key(b"x", "1"), "an id joins as text"
