"""Hot swaps under load: how soon a new version serves, and whether scoring stalls meanwhile.

Records stream at a fixed rate into one hotswap worker while new versions are
published straight to the model topic (pre-built messages, so the publisher's
conversion is not timed). Swap latency = the first scored record carrying the
version (its Kafka timestamp, set by the worker when it built the record) minus
the moment the broker acknowledged the model message. Stalls are read from the
scored records' timestamps: records of one micro-batch are stamped within a
millisecond, so a step of more than 1 ms is the gap between two batches, and
its stall is the time from the first record sent after the earlier batch to
the later one (:func:`bench.kafkaio.stalls`: the sender's own hiccups are no
stall of the worker); the normal gap is the median of those before the first
publish.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bigforest import train_big_forest
from bench.env import Env
from bench.kafkaio import Scored, Tail, percentile, send_at_rate, send_models, stalls
from service.core.messages import encode_model_message
from service.tools.publish import PublishRequest, build_message

__all__ = ["batch_gaps", "large_model", "swaps"]

_SAME_BATCH_MS = 1


def batch_gaps(records: list[Scored], sent: dict[str, float]) -> list[tuple[int, float]]:
    """(timestamp of the batch after the gap, its stall in ms), in time order."""
    return stalls(sent, records, apart=_SAME_BATCH_MS)


def _largest(gaps: list[tuple[int, float]], start: float, end: float) -> float:
    """Largest gap that ends within [start, end]: it overlaps the window."""
    return max((gap for at, gap in gaps if start <= at <= end), default=0)


def _first_of(records: list[Scored]) -> dict[str, int]:
    first: dict[str, int] = {}
    for r in records:
        if r.version is not None and (r.version not in first or r.created_ms < first[r.version]):
            first[r.version] = r.created_ms
    return first


async def _stream_and_publish(
    env: Env, topics: tuple[str, str, str], models: list[tuple[bytes, bytes]], pause: float
) -> tuple[list[Scored], list[tuple[float, float]], dict[str, float]]:
    """Stream at 1,000/s; after 3 s of output publish ``models`` ``pause`` s apart; 2 s more."""
    data, scored, model_topic = topics
    tail = await Tail(env.broker, scored).start()
    stop = asyncio.Event()
    stream = asyncio.create_task(send_at_rate(env.broker, data, 1000, 600, "swap", stop))
    try:
        await tail.until(lambda rs: len(rs) >= 3000, timeout=120)  # 3 s of steady stream
        times = await send_models(env.broker, model_topic, models, pause)
        await asyncio.sleep(2)
    finally:
        stop.set()
        sent = await stream
    await tail.until(lambda rs: len(rs) >= len(sent), timeout=15)
    await tail.stop()
    return tail.records, times, sent


def _gap_summary(gaps: list[tuple[int, float]], before_ms: float) -> dict[str, Any]:
    steady = [gap for at, gap in gaps if at < before_ms]
    return {
        "normal_gap_ms": statistics.median(steady) if steady else None,
        "steady_p99_gap_ms": percentile([float(g) for g in steady], 99),
        "steady_max_gap_ms": max(steady, default=None),
    }


def _rounded(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def swaps(env: Env, versions: int, pause: float = 0.3) -> dict[str, Any]:
    """Publish ``versions`` versions (wine-tree, wine-logreg, ...) while 1,000 records/s stream."""
    settings = env.settings()
    worker = env.start("at_least_once", settings).worker
    assert worker is not None
    models = [env.version(i + 1, f"s{i + 2}") for i in range(versions)]
    try:
        worker.wait_ready(90)
        topics = (settings.data_topic, settings.scored_topic, settings.model_topic)
        records, times, sent = asyncio.run(_stream_and_publish(env, topics, models, pause))
    finally:
        worker.stop()
    first = _first_of(records)
    gaps = batch_gaps(records, sent)
    out: dict[str, Any] = {"versions": versions, "sent": len(sent), "scored": len(records)}
    out.update(_gap_summary(gaps, times[0][0]))
    delays, worst = [], []
    for i, (started, acked) in enumerate(times):
        at = first.get(f"s{i + 2}")
        if at is not None:
            delays.append(round(at - acked, 1))
            worst.append(_largest(gaps, started, at))
    normal = out["normal_gap_ms"] or 1
    out.update(
        {
            "swaps_seen": len(delays),
            "swap_p50_ms": percentile(delays, 50),
            "swap_p99_ms": percentile(delays, 99),
            "swap_max_ms": percentile(delays, 100),
            "largest_gap_during_a_swap_ms": max(worst, default=None),
            "largest_gap_vs_normal": round(max(worst, default=0) / normal, 2),
            "swaps_with_gap_over_2x_normal": sum(1 for w in worst if w > 2 * normal),
        }
    )
    return out


def large_model(env: Env, trees: int) -> dict[str, Any]:
    """Swap to a forest of tens of MB, published by reference, while 1,000 records/s stream."""
    started = time.monotonic()
    joblib_path = train_big_forest(env.work / "models", trees=trees)
    message = build_message(
        PublishRequest(joblib_path, "wine", "big", store_dir=env.work / "store")
    )
    assert message.location is not None
    size_mb = Path(message.location.removeprefix("file://")).stat().st_size / 1e6
    prepared_s = time.monotonic() - started
    settings = env.settings()
    worker = env.start("at_least_once", settings).worker
    assert worker is not None
    try:
        worker.wait_ready(90)
        topics = (settings.data_topic, settings.scored_topic, settings.model_topic)
        models = [(message.name.encode(), encode_model_message(message))]
        records, times, sent = asyncio.run(_stream_and_publish(env, topics, models, 0))
        described = worker.get("/models/wine").json()
    except httpx.HTTPError as exc:
        described = {"error": str(exc)}
    finally:
        worker.stop()
    gaps = batch_gaps(records, sent)
    (started_ms, acked_ms), first_big = times[0], _first_of(records).get("big")
    out: dict[str, Any] = {
        "artifact_mb": round(size_mb, 1),
        "trees": trees,
        "train_and_convert_s": round(prepared_s, 1),
        "serving_version": described.get("version"),
        "load_ms": _rounded(described.get("load_ms")),
        "publish_to_first_scored_ms": round(first_big - acked_ms, 1) if first_big else None,
        "sent": len(sent),
        "scored": len(records),
    }
    out.update(_gap_summary(gaps, started_ms))
    if first_big is not None:
        largest = _largest(gaps, started_ms, first_big)
        out["largest_gap_while_loading_ms"] = largest
        out["largest_gap_vs_normal"] = round(largest / (out["normal_gap_ms"] or 1), 2)
        out["largest_gap_in_1s_after_ms"] = _largest(gaps, first_big, first_big + 1000)
        out["scored_while_loading"] = sum(
            1 for r in records if started_ms <= r.created_ms < first_big
        )
    return out
