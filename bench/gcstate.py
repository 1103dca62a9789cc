"""What the label join's state costs the cycle collector: ``python -m bench.gcstate``.

The join holds every prediction for ``HOTSWAP_LABEL_WINDOW`` (a day by default),
up to ``HOTSWAP_LABEL_STATE_BYTES``: at 2,000 records/s, hundreds of thousands of
blocks. Every object of it that the collector tracks is walked by each
collection of an older generation, with the event loop stopped meanwhile. This
fills one join with ``--predictions`` predictions in blocks of ``--block``
(a fraction ``--labelled`` of them joined to a label), as the worker does after
start-up (``gc.freeze``), and prints the objects the collector still tracks per
prediction and how long one full collection takes (the median of 5).
Investigation only, no broker; compare commits by running it on each.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import numpy as np

from service.core.labels import PartitionJoin
from service.core.predictions import PredictionBlock

__all__ = ["main"]


def run(predictions: int, block: int, labelled: float) -> dict[str, float]:
    join = PartitionJoin(0, window=86400.0, quality_window=3600.0, max_bytes=2**40)
    gc.collect()
    gc.freeze()  # what the worker does once scoring begins: start-up is never walked again
    before = len(gc.get_objects())
    classes = ["0", "1", "2"]
    every = round(1 / labelled) if labelled > 0 else 0
    made = 0
    while made < predictions:
        ids = [f"r{made + i}" for i in range(block)]
        probs = np.full((block, 3), 0.2)
        probs[:, 0] = 0.6
        keys: list[bytes | None] = [i.encode() for i in ids]
        join.predicted(
            PredictionBlock("m", "1", 1.0, keys, ids, [0] * block, probs, classes=classes), 1.0
        )
        if every:
            for rid in ids[::every]:
                join.labelled(rid.encode(), rid, 0, 2.0)
        made += block
    gc.collect()
    tracked = len(gc.get_objects()) - before
    took = []
    for _ in range(5):
        start = time.perf_counter()
        gc.collect()
        took.append((time.perf_counter() - start) * 1000)
    gc.unfreeze()
    return {"tracked_per_prediction": tracked / made, "full_collection_ms": statistics.median(took)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gcstate", description=__doc__)
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--block", type=int, default=5, help="predictions per block")
    parser.add_argument("--labelled", type=float, default=0.0, help="fraction joined to a label")
    args = parser.parse_args(argv)
    got = run(args.predictions, args.block, args.labelled)
    print(
        f"{args.predictions:,} predictions in blocks of {args.block}, {args.labelled:.0%} labelled:"
        f" {got['tracked_per_prediction']:.2f} tracked objects a prediction,"
        f" a full collection {got['full_collection_ms']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
