"""What quality and drift cost the scorer: ``python -m bench.quality``.

In one process, no broker: the :class:`~service.core.scoring.Scorer` scores
batches of wine records (JSON bytes, decoded as the worker decodes them) with
the logistic-regression model, with an observer that is timed apart, three
ways, interleaved and repeated:

- ``drift``: drift monitoring (a 13-feature profile, a 10,000-record window);
- ``join``: the label join's side of scoring (prediction blocks per
  partition, join state, the changelog event encoded; not its produce call);
- ``both``: drift and join together.

Prints the scorer's records per second without the observer's time and the
observer's CPU time as a share of the scorer's (medians of the repeats; both
from the same runs, so the noise of a shared machine cancels), and writes
``bench/results/quality.json``. A worker's CPU time per record, Kafka
included (README, Performance), is close to the scorer's alone measured
here, so the shares hold for a worker roughly as they are.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.core.drift import DriftMonitor, build_profile
from service.core.join_log import predictions_event
from service.core.labels import PartitionJoin
from service.core.observe import Observer
from service.core.predictions import PredictionBlock
from service.core.registry import ModelRegistry
from service.core.scoring import InputRecord, Scorer
from service.kafka.memory import tune_memory

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"


def _model(registry: ModelRegistry) -> None:
    import base64
    import hashlib

    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from service.core.convert import sklearn_to_onnx
    from service.core.messages import ModelMessage

    wine = load_wine()
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        wine.data, wine.target
    )
    converted = sklearn_to_onnx(est, wine.data[:8].astype(np.float32))
    meta: dict[str, Any] = {"feature_names": list(wine.feature_names), "classes": converted.classes}
    meta["drift_profile"] = build_profile(
        wine.data, list(wine.feature_names), est.predict(wine.data), None
    )
    message = ModelMessage(
        name="wine", version="1", data=base64.b64encode(converted.onnx).decode(),
        sha256=hashlib.sha256(converted.onnx).hexdigest(), metadata=meta,
    )  # fmt: skip
    registry.install(registry.build(message))


def _batches(size: int, count: int) -> list[list[InputRecord]]:
    from sklearn.datasets import load_wine

    rows = load_wine().data.tolist()
    batches, n = [], 0
    for _ in range(count):
        batch = []
        for _ in range(size):
            rid = f"r-{n}"
            value = orjson.dumps({"id": rid, "model": "wine", "features": rows[n % len(rows)]})
            batch.append(InputRecord(rid.encode(), value, "records", n % 4, n))
            n += 1
        batches.append(batch)
    return batches


class _Timed:
    """The observer, with the CPU time spent in it."""

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self.spent = 0.0

    def scored(self, *args: Any, **kwargs: Any) -> None:
        started = time.process_time()
        self.inner.scored(*args, **kwargs)
        self.spent += time.process_time() - started


def _observer(kind: str) -> Observer:
    drift = (
        DriftMonitor(None, window=10_000, max_features=20) if kind in {"drift", "both"} else None
    )
    joins = {
        p: PartitionJoin(p, window=86400, quality_window=3600, max_bytes=64 * 1024**2)
        for p in range(4)
    }

    def sink(partition: int, block: PredictionBlock) -> None:
        joins[partition].predicted(block, block.at)
        predictions_event(block)

    return Observer(sink=sink if kind in {"join", "both"} else None, drift=drift)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", type=int, default=2000, help="records per batch")
    parser.add_argument("--batches", type=int, default=25, help="batches per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each kind, interleaved")
    args = parser.parse_args(argv)
    registry = ModelRegistry()
    _model(registry)
    batches = _batches(args.batch, args.batches)
    tune_memory()  # the collector settings of a worker once it scores
    kinds = ("drift", "join", "both")
    shares: dict[str, list[float]] = {k: [] for k in kinds}
    rates: list[float] = []
    for _ in range(args.repeat):
        for kind in kinds:
            scorer = Scorer(registry, max_record_bytes=1_000_000)
            timed = _Timed(_observer(kind))
            scorer.observer = timed
            started = time.process_time()  # CPU time: the machine is shared
            for batch in batches:
                scorer.score(batch)
            total = time.process_time() - started
            scoring = total - timed.spent  # the same run without the observer's share
            shares[kind].append(100 * timed.spent / scoring)
            rates.append(args.batch * args.batches / scoring)
    result = {
        "batch": args.batch,
        "records_per_run": args.batch * args.batches,
        "repeat": args.repeat,
        "scoring_records_per_second": round(statistics.median(rates)),
        "overhead_percent": {k: round(statistics.median(v), 2) for k, v in shares.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"scoring alone: {result['scoring_records_per_second']:,} records/s (CPU time)")
    for kind in kinds:
        print(f"{kind:6} +{result['overhead_percent'][kind]} % of the scorer's CPU time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
