"""The benchmark sections; each starts what it measures and stops it again."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

from bench.measure import ProcStats, RateStream, preload, read_scored, scored_count
from models.train import train_model
from scripts.harness import REPO, WorkerProcess, wait_for
from scripts.localkafka import LocalKafka, free_port
from service.kafka_clients import ensure_topics
from service.messages import ModelMessage, encode_model_message
from service.publish import PublishRequest, build_message, publish_message
from service.settings import Settings

__all__ = ["Env", "large_model", "latency", "memory", "summary", "swaps", "throughput"]


@dataclass
class Env:
    kafka: LocalKafka
    work: Path
    logreg: Path
    tree: Path
    logreg_onnx: Path
    quick: bool

    @classmethod
    def prepare(cls, kafka: LocalKafka, work: Path, *, quick: bool) -> Env:
        models = work / "models"
        logreg, tree = train_model("wine-logreg", models), train_model("wine-tree", models)
        onnx = models / "wine-logreg.onnx"
        onnx.write_bytes(_decoded(build_message(PublishRequest(logreg, "wine", "0"))))
        return cls(kafka, work, logreg, tree, onnx, quick)

    def settings(self) -> Settings:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(
            broker=f"kafka://{self.kafka.bootstrap}",
            model_topic=f"b{tag}-models",
            archive_topic=f"b{tag}-archive",
            data_topic=f"b{tag}-records",
            scored_topic=f"b{tag}-scored",
            dead_letter_topic=f"b{tag}-dlq",
            app_id=f"bench-{tag}",
            http_host="127.0.0.1",
            http_port=free_port(),
            data_dir=str(self.work / f"w-{tag}"),
            log_level="WARNING",
        )
        asyncio.run(ensure_topics(settings))
        return settings


def _decoded(message: ModelMessage) -> bytes:
    import base64

    return base64.b64decode(message.data or "")


# --- contenders ---------------------------------------------------------------------


def start(
    name: str, env: Env, settings: Settings
) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """Start a contender on ``settings``'s topics; return its process and a stopper."""
    broker = settings.bootstrap_servers[0]
    log = (env.work / f"{name}-{settings.app_id}.log").open("wb")
    if name == "hotswap":
        asyncio.run(
            publish_message(settings, build_message(PublishRequest(env.logreg, "wine", "1")))
        )
        worker = WorkerProcess(settings, env.work / f"hotswap-{settings.app_id}.log").start()
        assert worker.proc is not None
        return worker.proc, lambda: (worker.stop(), None)[1]
    args = [
        sys.executable, "-m", "bench.contenders", name, "--broker", broker,
        "--data-topic", settings.data_topic, "--scored-topic", settings.scored_topic,
        "--group", settings.app_id, "--model", str(env.logreg_onnx),
        "--estimator", str(env.logreg), "--datadir", settings.data_dir,
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    return proc, stop


def throughput(env: Env, records: int) -> dict[str, Any]:
    """Preload ``records``, start each contender, time from first to last scored record."""
    out: dict[str, Any] = {"records": records}
    for name in ("floor", "naive", "hotswap"):
        settings = env.settings()
        preload(settings.bootstrap_servers[0], settings.data_topic, records)
        proc, stop = start(name, env, settings)
        stats = ProcStats(proc.pid)
        broker, topic = settings.bootstrap_servers[0], settings.scored_topic

        def count(broker: str = broker, topic: str = topic) -> int:
            return scored_count(broker, topic)

        try:
            first = wait_for(count, 120, "first scored record")
            t0, cpu0 = time.monotonic(), stats.cpu_seconds()
            wait_for(lambda: count() >= records, 600, "every record scored", 0.02)
            seconds, cpu = time.monotonic() - t0, stats.cpu_seconds() - cpu0
            done = records - first
            out[name] = {
                "records_per_s": round(done / seconds),
                "cpu_s_per_100k": round(cpu / done * 100_000, 2),
                "peak_rss_mb": round(stats.peak_rss_mb()),
            }
        finally:
            stop()
        print(f"  {name}: {out[name]}", flush=True)
    floor = out["floor"]["records_per_s"]
    out["hotswap_vs_floor"] = round(out["hotswap"]["records_per_s"] / floor, 2)
    out["hotswap_vs_naive"] = round(
        out["hotswap"]["records_per_s"] / out["naive"]["records_per_s"], 2
    )
    return out


def _warm(settings: Settings, name: str) -> None:
    """Wait until the contender scores: one record in, one out."""
    broker = settings.bootstrap_servers[0]
    preload(broker, settings.data_topic, 1, prefix="warm")
    wait_for(lambda: scored_count(broker, settings.scored_topic) >= 1, 120, f"{name} warm")


def latency(env: Env, seconds: float, rate: float = 1000) -> dict[str, Any]:
    """End-to-end latency (input timestamp to scored timestamp) at a fixed rate."""
    out: dict[str, Any] = {"rate": rate, "seconds": seconds}
    for name in ("floor", "naive", "hotswap"):
        settings = env.settings()
        _, stop = start(name, env, settings)
        broker = settings.bootstrap_servers[0]
        try:
            _warm(settings, name)
            stream = RateStream(broker, settings.data_topic, rate, seconds)
            stream.start()
            stream.join()
            scored = read_scored(broker, settings.scored_topic, len(stream.sent_ms) + 1, 60)
            lat = [r.timestamp_ms - stream.sent_ms[r.id] for r in scored if r.id in stream.sent_ms]
            out[name] = {
                "p50_ms": round(float(np.percentile(lat, 50)), 1),
                "p99_ms": round(float(np.percentile(lat, 99)), 1),
                "scored": len(lat),
                "sent": len(stream.sent_ms),
            }
        finally:
            stop()
        print(f"  {name}: {out[name]}", flush=True)
    return out


async def _send_models(
    settings: Settings, messages: list[ModelMessage], pause: float
) -> list[float]:
    """Publish ``messages`` one by one; return each one's acknowledgement time (ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    acked: list[float] = []
    try:
        for message in messages:
            await producer.send_and_wait(
                settings.model_topic, encode_model_message(message), key=message.name.encode()
            )
            acked.append(time.time() * 1000)
            await asyncio.sleep(pause)
    finally:
        await producer.stop()
    return acked


def _gaps(timestamps: list[int]) -> tuple[list[int], list[int]]:
    ts = sorted(set(timestamps))
    return ts, [b - a for a, b in itertools.pairwise(ts)]


def _max_gap(ts: list[int], gaps: list[int], start_ms: float, end_ms: float) -> int:
    return max((g for t, g in zip(ts[1:], gaps) if start_ms <= t <= end_ms + 1), default=0)


def _hotswap(env: Env) -> tuple[Settings, WorkerProcess]:
    settings = env.settings()
    asyncio.run(publish_message(settings, build_message(PublishRequest(env.logreg, "wine", "1"))))
    worker = WorkerProcess(settings, env.work / f"hotswap-{settings.app_id}.log").start()
    worker.wait_ready()
    return settings, worker


def swaps(env: Env, versions: int, rate: float = 1000) -> dict[str, Any]:
    """Publish ``versions`` versions while records stream; time each to its first scored record."""
    settings, worker = _hotswap(env)
    base = [build_message(PublishRequest(p, "wine", "x")) for p in (env.logreg, env.tree)]
    messages = [base[i % 2].model_copy(update={"version": str(i + 2)}) for i in range(versions)]
    broker = settings.bootstrap_servers[0]
    try:
        stream = RateStream(broker, settings.data_topic, rate, 3 + versions * 0.3)
        stream.start()
        time.sleep(1.5)
        acked = asyncio.run(_send_models(settings, messages, 0.25))
        stream.join()
        scored = read_scored(broker, settings.scored_topic, len(stream.sent_ms), 60)
    finally:
        worker.stop()
    first: dict[str, int] = {}
    for r in sorted(scored, key=lambda r: r.timestamp_ms):
        if r.version is not None and r.version not in first:
            first[r.version] = r.timestamp_ms
    delays = [first[m.version] - t for m, t in zip(messages, acked) if m.version in first]
    ts, gaps = _gaps([r.timestamp_ms for r in scored])
    normal = statistics.median(gaps) if gaps else 0
    worst = max(
        (_max_gap(ts, gaps, t, first.get(m.version, t)) for m, t in zip(messages, acked)), default=0
    )
    return {
        "versions": versions,
        "seen": len(delays),
        "publish_to_first_scored_p50_ms": round(float(np.percentile(delays, 50)), 1),
        "publish_to_first_scored_p99_ms": round(float(np.percentile(delays, 99)), 1),
        "normal_gap_ms": normal,
        "largest_gap_around_a_swap_ms": worst,
        "records": len(scored),
    }


def _big_forest(env: Env) -> Path:
    """A random forest whose ONNX is tens of MB, saved with wine's sidecar metadata."""
    import joblib
    import orjson
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 13)).astype(np.float32)
    y = rng.integers(0, 3, size=20_000)
    forest = RandomForestClassifier(n_estimators=120, min_samples_leaf=3, n_jobs=2, random_state=0)
    forest.fit(x, y)
    path = env.work / "models" / "big-forest.joblib"
    joblib.dump(forest, path)
    meta = orjson.loads(env.logreg.with_suffix(".meta.json").read_bytes())
    meta["sample_rows"] = x[:8].tolist()
    path.with_suffix(".meta.json").write_bytes(orjson.dumps(meta))
    return path


def large_model(env: Env, rate: float = 1000) -> dict[str, Any]:
    """Swap to a tens-of-MB forest by reference while records stream: does scoring stall?"""
    message = build_message(
        PublishRequest(_big_forest(env), "wine", "big", store_dir=env.work / "store")
    )
    assert message.location is not None
    size_mb = Path(message.location.removeprefix("file://")).stat().st_size / 1e6
    settings, worker = _hotswap(env)
    broker = settings.bootstrap_servers[0]
    try:
        stream = RateStream(broker, settings.data_topic, rate, 20)
        stream.start()
        time.sleep(4)
        acked = asyncio.run(_send_models(settings, [message], 0))[0]
        wait_for(lambda: worker.model_version("wine") == "big", 120, "big model swapped in")
        load_ms = worker.get("/models/wine").json()["load_ms"]
        stream.join()
        scored = read_scored(broker, settings.scored_topic, len(stream.sent_ms), 60)
    finally:
        worker.stop()
    first_big = min((r.timestamp_ms for r in scored if r.version == "big"), default=acked)
    ts, gaps = _gaps([r.timestamp_ms for r in scored])
    before = [g for t, g in zip(ts[1:], gaps) if t < acked]
    return {
        "artifact_mb": round(size_mb, 1),
        "load_ms": load_ms,
        "normal_gap_ms": statistics.median(before) if before else 0,
        "largest_gap_while_loading_ms": _max_gap(ts, gaps, acked, first_big),
        "scored_during_load": sum(1 for r in scored if acked <= r.timestamp_ms < first_big),
        "records": len(scored),
    }


def memory(env: Env, many: int) -> dict[str, Any]:
    """RSS of a worker after 5 swaps and after ``many`` swaps (released sessions must not leak)."""
    settings, worker = _hotswap(env)
    assert worker.proc is not None
    stats = ProcStats(worker.proc.pid)
    base = [build_message(PublishRequest(p, "wine", "x")) for p in (env.logreg, env.tree)]
    messages = [base[i % 2].model_copy(update={"version": str(i + 2)}) for i in range(many)]
    try:
        asyncio.run(_send_models(settings, messages[:5], 0))
        wait_for(lambda: worker.model_version("wine") == messages[4].version, 60, "5 swaps")
        after_5 = stats.rss_mb()
        asyncio.run(_send_models(settings, messages[5:], 0))
        wait_for(lambda: worker.model_version("wine") == messages[-1].version, 300, "all swaps")
        after_many = stats.rss_mb()
    finally:
        worker.stop()
    return {
        "rss_after_5_mb": round(after_5, 1),
        f"rss_after_{many}_mb": round(after_many, 1),
        "ratio": round(after_many / after_5, 3),
    }


def summary(results: dict[str, Any]) -> str:
    """The README's table."""
    lines = [f"\nmachine: {results['machine']}; command: {results['command']}"]
    tp, lat = results.get("throughput"), results.get("latency")
    if tp:
        lines += [
            "",
            "| contender | rec/s | x floor | CPU s/100k | peak RSS MB | p50 e2e ms | p99 e2e ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("floor", "naive", "hotswap"):
            row, lt = tp[name], (lat or {}).get(name, {})
            ratio = row["records_per_s"] / tp["floor"]["records_per_s"]
            lines.append(
                f"| {name} | {row['records_per_s']} | {ratio:.2f} | {row['cpu_s_per_100k']} | "
                f"{row['peak_rss_mb']} | {lt.get('p50_ms', '-')} | {lt.get('p99_ms', '-')} |"
            )
        lines.append(f"\nhotswap / naive: {tp['hotswap_vs_naive']}x")
    for key in ("swap", "large", "memory"):
        if key in results:
            lines.append(f"{key}: " + ", ".join(f"{k} {v}" for k, v in results[key].items()))
    return "\n".join(lines)
