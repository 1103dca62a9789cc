"""Memory across swaps: a worker that swaps for weeks must not grow with every version.

Each swap builds a new ONNX Runtime session and releases the old one; a leak
(a session kept alive by a reference, history without bound, arenas never
returned) shows as resident memory growing with the number of swaps. So: RSS
after 5 swaps, then after many more small ones, published back to back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.env import Env
from bench.kafkaio import send_models
from bench.procstats import ProcStats
from scripts.harness import WorkerProcess, wait_for

__all__ = ["memory"]


def _swap_to(
    env: Env, worker: WorkerProcess, models: list[tuple[bytes, bytes]], last: str
) -> float:
    """Publish ``models`` back to back; seconds until the worker serves version ``last``."""
    started = time.monotonic()
    asyncio.run(send_models(env.broker, worker.settings.model_topic, models, 0))
    wait_for(lambda: worker.model_version("wine") == last, 600, f"version {last}", 0.1)
    return time.monotonic() - started


def memory(env: Env, many: int) -> dict[str, Any]:
    """Resident memory of one worker after 5 swaps and after ``many`` swaps."""
    settings = env.settings()
    worker = env.start("at_least_once", settings).worker
    assert worker is not None
    assert worker.proc is not None
    stats = ProcStats(worker.proc.pid)
    models = [env.version(i + 1, f"m{i + 2}") for i in range(many)]
    try:
        worker.wait_ready(90)
        rss_start = stats.rss_mb()
        _swap_to(env, worker, models[:5], f"m{5 + 1}")
        time.sleep(1)
        rss_5 = stats.rss_mb()
        seconds = _swap_to(env, worker, models[5:], f"m{many + 1}")
        time.sleep(1)
        rss_many = stats.rss_mb()
        counted = worker.metric("hotswap_model_swaps_total")
    finally:
        worker.stop()
    return {
        "swaps": many,
        "rss_at_ready_mb": round(rss_start, 1),
        "rss_after_5_mb": round(rss_5, 1),
        "rss_after_many_mb": round(rss_many, 1),
        "ratio": round(rss_many / rss_5, 3),
        "seconds_for_the_rest": round(seconds, 1),
        "swaps_per_s": round((many - 5) / seconds, 1),
        "swaps_counted_by_worker": int(counted),  # includes version 1
    }
