"""The worker's per-batch work on its main thread, stage by stage, with no broker.

``python -m bench.hotpath`` builds what the data feed and the scoring agent do
to one fetched batch, in the same order and with the same objects, and times
each stage in CPU time of this thread (``time.thread_time``: other processes
on a shared machine barely move it), in microseconds per record:

- ``records_of``: confluent-kafka messages to input records and offsets;
- ``score``: decoding, validation, one ONNX call, rendering, scored records,
  and the observer (the label join's state and changelog event, and drift);
- ``send``: ``Publisher.send`` queueing every output in librdkafka (a producer
  with no broker behind it: records only queue, as they do before a flush);
- ``account``: counters and the latency histogram once a batch is delivered.

Investigation, not a throughput figure: fetching, the thread hops and the
broker's acknowledgements are not here (``python -m bench`` measures those).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Message, Producer

from bench.kafkaio import record
from models.train import train_model
from service.core.drift import DriftMonitor
from service.core.join_log import predictions_event
from service.core.labels import PartitionJoin
from service.core.metrics import Metrics
from service.core.observe import Observer
from service.core.predictions import PredictionBlock
from service.core.registry import ModelRegistry
from service.core.scoring import Scorer
from service.core.settings import Settings
from service.kafka.batch import account
from service.kafka.fetched import records_of
from service.kafka.memory import tune_memory
from service.kafka.publisher import Publisher
from service.tools.publish import PublishRequest, build_message

__all__ = ["main"]

_PARTITIONS = 4


def _messages(batch: int, first: int) -> list[Message]:
    """A fetched batch: wine records keyed by id, runs of a partition as a fetch returns."""
    out = []
    per = batch // _PARTITIONS
    for n in range(batch):
        key, value = record(first + n, "h")
        partition, offset = divmod(n, per) if per else (0, n)
        out.append(
            Message(
                topic="data",
                partition=min(partition, _PARTITIONS - 1),
                offset=first + offset,
                key=key,
                value=value,
                timestamp=(1, int(time.time() * 1000)),
            )
        )
    return out


def _join_sink() -> Callable[[int, PredictionBlock], None]:
    """What ``LabelsFeed.record`` does on the event loop, minus producing the event."""
    joins: dict[int, PartitionJoin] = {}

    def sink(partition: int, block: PredictionBlock) -> None:
        join = joins.get(partition)
        if join is None:
            join = joins[partition] = PartitionJoin(
                partition, window=86400, quality_window=3600, max_bytes=64 * 1024**2
            )
        join.predicted(block, block.at)
        predictions_event(block)

    return sink


def _publisher(settings: Settings) -> Publisher:
    publisher = Publisher(settings, transactional=False)
    config = dict(publisher._config)  # a bench: no broker to start against
    config["bootstrap.servers"] = "127.0.0.1:9"  # nothing listens: records only queue
    config["log_level"] = 0
    publisher._producer = Producer(config)
    publisher._check_above = 500_000
    return publisher


def run(batches: int, batch: int, observe: bool) -> dict[str, float]:
    """CPU µs per record of each stage, the median over ``batches`` batches."""
    work = Path(tempfile.mkdtemp(prefix="hotswap-hotpath-"))
    message = build_message(PublishRequest(train_model("wine-logreg", work), "wine", "1"))
    registry = ModelRegistry()
    registry.install(registry.build(message))
    metrics = Metrics()
    scorer = Scorer(registry, max_record_bytes=1_000_000)
    if observe:
        drift = DriftMonitor(metrics, window=10_000, max_features=20)
        scorer.observer = Observer(sink=_join_sink(), drift=drift)
    publisher = _publisher(Settings())
    stages: dict[str, list[float]] = {"records_of": [], "score": [], "send": [], "account": []}
    tune_memory()  # as the worker does once scoring begins
    clock = time.thread_time
    for i in range(batches):
        messages = _messages(batch, i * batch)  # new records: the join sees new keys
        t0 = clock()
        records, _, _, _ = records_of(messages)
        t1 = clock()
        result = scorer.score(records)
        t2 = clock()
        publisher.begin()
        publisher.send(result.outputs)
        t3 = clock()
        account(metrics, result.outputs)
        t4 = clock()
        publisher._producer.purge()  # keep the local queue from filling
        publisher._producer.poll(0)
        for name, took in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[name].append(took * 1e6 / batch)
    out = {name: statistics.median(values[2:]) for name, values in stages.items()}
    out["total"] = sum(out.values())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000, help="records per batch")
    parser.add_argument("--no-observer", action="store_true", help="no label join or drift")
    args = parser.parse_args(argv)
    result: dict[str, Any] = run(args.batches, args.batch, not args.no_observer)
    print(f"CPU µs per record (median of {args.batches} batches of {args.batch}):")
    for name, value in result.items():
        print(f"  {name:<12}{value:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
