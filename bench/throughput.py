"""Throughput and end-to-end latency of the floors, hotswap and naive, one after the other.

Throughput: N records are loaded into a fresh data topic first, then the
contender starts; the clock runs from the first poll that sees a scored record
to the poll that sees all N (the scored topic's end offsets, every 10 ms; for
``exactly_once``, its committed input offsets), so process start-up, group
join and model load are excluded for every contender alike. CPU is the
contender's utime + stime over that same window. The floors and hotswap run
several times (alternating); the median run counts, the best is printed beside it.

Latency: records sent at a fixed rate (confluent-kafka on a thread of its own),
each stamped with its send time (its Kafka timestamp); end to end = the scored
record's own timestamp (set by the contender when it produced it) minus the
input's. Also reported: when a consumer here received the scored record minus
the input's stamp ("read"), which adds delivery to a reader (and, for
exactly_once, the wait for the transaction's commit). Pauses: the longest
stretch in which no scored record was produced while input was waiting (see
:func:`bench.kafkaio.stalls`: a gap in the input is no pause), and how many
such stretches exceed 50 ms; at 2,000 records/s a record is due every 0.5 ms.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.env import CONTENDERS, FLOORS, LABELS, Env, exactly_once_supported
from bench.kafkaio import (
    Tail,
    percentile,
    preload,
    scored_end,
    send_at_rate,
    stalls,
    topic_partitions,
)
from bench.procstats import ProcStats

__all__ = ["latency", "ratios", "throughput"]

_PAUSE_MS = 50  # a stretch without output longer than this is a pause


@dataclass
class _Window:
    t0: float = 0.0
    n0: int = 0
    cpu0: float = 0.0
    t1: float = 0.0
    n1: int = 0
    cpu1: float = 0.0


class _Progress:
    """How many records a contender has finished, read from outside (cheap, no fetch).

    Non-transactional contenders: the sum of the scored topic's end offsets.
    ``exactly_once``: the contender's committed input offsets, which commit in
    the same transaction as its outputs; the scored topic's end offsets would
    also count the transaction markers.
    """

    def __init__(self, broker: str, topic: str, group: str | None) -> None:
        self.broker, self.topic, self.group = broker, topic, group
        self._consumer: AIOKafkaConsumer | None = None  # built on the running loop
        self._admin: AIOKafkaAdminClient | None = None
        self._tps: list[TopicPartition] = []

    async def start(self) -> _Progress:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.broker)
        await self._consumer.start()
        self._tps = await topic_partitions(self._consumer, self.topic)
        if self.group is not None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.broker)
            await self._admin.start()
        return self

    async def count(self) -> int:
        if self._admin is None:
            assert self._consumer is not None
            return await scored_end(self._consumer, self._tps)
        assert self.group is not None
        offsets = await self._admin.list_consumer_group_offsets(self.group, partitions=self._tps)
        return sum(max(0, o.offset) for o in offsets.values())

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()


async def _watch(
    progress: _Progress, want: int, stats: ProcStats, alive: Callable[[], bool], timeout: float
) -> _Window:
    window = _Window()
    await progress.start()
    try:
        deadline = time.monotonic() + timeout
        seen_first = False
        while True:
            n = await progress.count()
            now = time.monotonic()
            if not seen_first and n > 0:
                seen_first = True
                window.t0, window.n0, window.cpu0 = now, n, stats.cpu_seconds()
            if n >= want or now > deadline or not alive():
                window.t1, window.n1, window.cpu1 = now, n, stats.cpu_seconds()
                return window
            await asyncio.sleep(0.01)
    finally:
        await progress.stop()


def _throughput_of(env: Env, name: str, records: int) -> dict[str, Any]:
    settings = env.settings()
    asyncio.run(preload(env.broker, settings.data_topic, records))
    if name == "exactly_once":
        progress = _Progress(env.broker, settings.data_topic, settings.app_id)
    else:
        progress = _Progress(env.broker, settings.scored_topic, None)
    contender = env.start(name, settings)
    try:
        stats = ProcStats(contender.proc.pid)
        timeout = 60 + records / 250
        alive = lambda: contender.proc.poll() is None  # noqa: E731
        window = asyncio.run(_watch(progress, records, stats, alive, timeout))
        peak = stats.peak_rss_mb()
    finally:
        contender.stop()
    done, seconds = window.n1 - window.n0, window.t1 - window.t0
    if done <= 0 or seconds <= 0:
        return {"error": f"scored {window.n1} of {records}", "scored": window.n1}
    row: dict[str, Any] = {
        "records_per_s": round(done / seconds),
        "cpu_s_per_100k": round((window.cpu1 - window.cpu0) / done * 100_000, 2),
        "peak_rss_mb": round(peak, 1),
        "timed_records": done,
        "seconds": round(seconds, 2),
    }
    if window.n1 < records:
        row["incomplete"] = f"scored {window.n1} of {records} before the timeout"
    return row


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 2) if isinstance(a, int | float) and isinstance(b, int | float) else None


def _runnable(contenders: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The contenders this checkout can run, and a note for each one it cannot."""
    skipped: dict[str, Any] = {}
    if "exactly_once" in contenders and not exactly_once_supported():
        skipped["exactly_once"] = {
            "error": "not measured: this worker has no HOTSWAP_PROCESSING_GUARANTEE setting"
        }
    return [c for c in contenders if c not in skipped], skipped


def ratios(rate: dict[str, Any]) -> dict[str, Any]:
    """The floor (the faster raw loop) and every ratio the report prints."""
    floors: dict[str, float] = {}
    for name in FLOORS:
        value = rate.get(name)
        if isinstance(value, int | float):
            floors[name] = value
    best = max(floors, key=floors.__getitem__) if floors else None
    floor = floors[best] if best else None
    return {
        "floor": best,
        "floor_records_per_s": floor,
        "confluent_vs_aiokafka": _ratio(rate.get("floor_confluent"), rate.get("floor_aiokafka")),
        "at_least_once_vs_floor": _ratio(rate.get("at_least_once"), floor),
        "exactly_once_vs_floor": _ratio(rate.get("exactly_once"), floor),
        "exactly_once_vs_at_least_once": _ratio(
            rate.get("exactly_once"), rate.get("at_least_once")
        ),
        "at_least_once_vs_naive": _ratio(rate.get("at_least_once"), rate.get("naive")),
        "naive_vs_floor": _ratio(rate.get("naive"), floor),
    }


def throughput(
    env: Env, records: int, repeat: int, contenders: Sequence[str] = CONTENDERS
) -> dict[str, Any]:
    """records/s, CPU s per 100k and peak RSS of every contender on the same ``records``.

    The floors and hotswap finish in seconds, so a burst of noise on a shared
    machine moves them a lot: they run ``repeat`` times, alternating. Each
    contender's row is its median run (by records/s); the best run is kept
    beside it, and the ratios are printed for both, so a margin shows in the
    median, not only in a lucky run. Naive runs once: it takes ~50x longer, and
    its ratio is far from any threshold, so it gets a tenth of the records (at
    most 20,000): a rate is a rate.
    """
    runnable, skipped = _runnable(contenders)
    out: dict[str, Any] = {"records": records, "partitions": 4, "repeat": repeat, **skipped}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runnable}
    fast = [name for name in runnable if name != "naive"]
    order = (["naive"] if "naive" in runnable else []) + fast * repeat
    for name in order:
        count = min(records // 10, 20_000) if name == "naive" else records
        runs[name].append(_throughput_of(env, name, max(count, 1000)))
        print(f"  {LABELS[name]}: {runs[name][-1]}", flush=True)
    for name in runnable:
        ranked = sorted(runs[name], key=lambda r: r.get("records_per_s", 0))
        out[name] = dict(ranked[(len(ranked) - 1) // 2])  # the median run (the lower one of two)
        if len(ranked) > 1:
            out[name]["all_records_per_s"] = [r.get("records_per_s") for r in runs[name]]
            out[name]["best_records_per_s"] = ranked[-1].get("records_per_s")
    out.update(ratios({name: out[name].get("records_per_s") for name in runnable}))
    best = ratios({name: out[name].get("best_records_per_s") for name in runnable})
    out["best"] = {k: v for k, v in best.items() if "_vs_" in k}
    return out


async def _latency_run(
    broker: str, data: str, scored: str, rate: float, seconds: float, committed: bool
) -> dict[str, Any]:
    # Warm up: the contender has joined its group and scores when one record comes back.
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, scored)
        await preload(broker, data, 1, prefix="warm")
        deadline = time.monotonic() + 120
        while await scored_end(consumer, tps) < 1 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if await scored_end(consumer, tps) < 1:
            return {"error": "no record scored within 120 s of the start"}
    finally:
        await consumer.stop()
    tail = await Tail(broker, scored, read_committed=committed).start()
    gc.collect()  # no collections while the reader collects records: with what this process
    gc.disable()  # held from earlier sections, they paused it for 100-200 ms ("read" latency)
    try:
        sent = await send_at_rate(broker, data, rate, seconds, prefix="lat")
        await tail.until(lambda rs: len(rs) >= len(sent), timeout=15)
    finally:
        await tail.stop()
        gc.enable()
    read = [r.received_ms - sent[r.id] for r in tail.records if r.id in sent]
    e2e = [r.created_ms - sent[r.id] for r in tail.records if r.id in sent]
    if not e2e:
        return {"error": f"0 of {len(sent)} records scored (read_committed: {committed})"}
    gaps = [stall for _, stall in stalls(sent, [r for r in tail.records if r.id in sent])]
    return {
        "p50_ms": percentile(e2e, 50),
        "p99_ms": percentile(e2e, 99),
        "max_ms": percentile(e2e, 100),
        "read_p50_ms": percentile(read, 50),
        "read_p99_ms": percentile(read, 99),
        "longest_pause_ms": max(gaps, default=None),
        "pauses_over_50_ms": sum(1 for g in gaps if g > _PAUSE_MS),
        "sent": len(sent),
        "scored": len(e2e),
    }


def latency(
    env: Env, seconds: float, rate: float = 2000, contenders: Sequence[str] = CONTENDERS
) -> dict[str, Any]:
    """End-to-end latency of every contender at ``rate`` records/s for ``seconds``.

    ``exactly_once`` is read as its consumers must read it (``read_committed``),
    so its latency includes the wait for the transaction to commit.
    """
    runnable, skipped = _runnable(contenders)
    out: dict[str, Any] = {"rate": rate, "seconds": seconds, **skipped}
    for name in runnable:
        settings = env.settings()
        contender = env.start(name, settings)
        try:
            if contender.worker is not None:
                contender.worker.wait_ready(90)
            out[name] = asyncio.run(
                _latency_run(
                    env.broker,
                    settings.data_topic,
                    settings.scored_topic,
                    rate,
                    seconds,
                    committed=name == "exactly_once",
                )
            )
        except AssertionError as exc:  # not ready in time: report it, measure the others
            out[name] = {"error": str(exc).splitlines()[0]}
        finally:
            contender.stop()
        print(f"  {LABELS[name]}: {out[name]}", flush=True)
    return out
