"""Where a hotswap worker's time goes under load: ``python -m bench.profile``.

Starts a broker, preloads records, and runs ``hotswap worker`` inside a thin
wrapper (``--as-worker``) that samples the main thread with pyinstrument (when
installed: ``.venv/bin/pip install pyinstrument``; it is not a project
dependency) and times every garbage collection, because a full collection
stalls the event loop and shows up as a gap in the output. The worker is
stopped with SIGTERM once every record is scored; the wrapper writes its
findings to ``bench/results/``: ``profile.txt`` (call tree), ``profile-flat.txt``
(functions by self time) and ``profile-gc.json`` (collections by generation). Investigation
only: the profiler slows the worker, so take no throughput figures from here.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.env import Env
from bench.kafkaio import preload, scored_end, topic_partitions
from scripts.harness import REPO, settings_env
from scripts.localkafka import LocalKafka, fetch, free_port
from service.tools.publish import publish_message

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"


def _gc_timer() -> list[dict[str, Any]]:
    """Record (generation, milliseconds, collected) of every collection."""
    log: list[dict[str, Any]] = []
    began: list[float] = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - began[0]) * 1000
            log.append({"generation": info["generation"], "ms": ms, "at": time.time()})

    gc.callbacks.append(callback)
    return log


def _thread_cpu() -> str:
    """CPU seconds per thread of this process (Linux), busiest first: where the time
    goes beside the main thread (librdkafka's threads are named ``rdk:...``)."""
    rows: list[tuple[float, str]] = []
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        rows.append(((int(fields[11]) + int(fields[12])) / tick, f"{task.name} {comm}"))
    rows.sort(reverse=True)
    return "".join(f"{cpu:8.2f} s  {name}\n" for cpu, name in rows)


def _as_worker(out: Path, interval: float) -> None:
    """Run ``hotswap worker`` in this process, profiled; write the reports on the way out."""
    collections = _gc_timer()
    profiler: Any = None
    try:
        if interval <= 0:  # threads' CPU and collections only, at full speed
            raise ImportError
        pyinstrument = importlib.import_module("pyinstrument")
        profiler = pyinstrument.Profiler(interval=interval, async_mode="disabled")
    except ImportError:
        print("pyinstrument is not installed: GC timings only", file=sys.stderr)
    from service.core.settings import Settings
    from service.worker import serve

    if profiler is not None:
        profiler.start()
    try:
        serve(Settings())
    finally:
        if profiler is not None:
            profiler.stop()
            (out / "profile.txt").write_text(profiler.output_text(show_all=False))
            flat = profiler.output_text(flat=True, flat_time="self")
            (out / "profile-flat.txt").write_text("\n".join(flat.splitlines()[:80]) + "\n")
        by_gen: dict[int, list[float]] = {}
        for c in collections:
            by_gen.setdefault(c["generation"], []).append(c["ms"])
        summary = {
            str(g): {"count": len(v), "total_ms": sum(v), "max_ms": max(v)}
            for g, v in sorted(by_gen.items())
        }
        (out / "profile-threads.txt").write_text(_thread_cpu())
        tracked = len(gc.get_objects())
        slowest = sorted(collections, key=lambda c: -c["ms"])[:20]
        report = {"summary": summary, "tracked_objects_at_exit": tracked, "slowest": slowest}
        (out / "profile-gc.json").write_text(json.dumps(report, indent=1))


async def _wait_scored(broker: str, topic: str, want: int, timeout: float) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        first: float | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = await scored_end(consumer, tps)
            if n and first is None:
                first = time.monotonic()
            if n >= want:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - (first or time.monotonic())
    finally:
        await consumer.stop()


def _drive(records: int, interval: float) -> None:
    fetch()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hotswap-profile-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        kafka = LocalKafka(free_port(), work / "kafka")
        kafka.start()
        try:
            env = Env.prepare(kafka, work)
            settings = env.settings()
            asyncio.run(publish_message(settings, env.messages[0]))
            asyncio.run(preload(env.broker, settings.data_topic, records))
            command = [sys.executable, "-m", "bench.profile", "--as-worker", str(RESULTS)]
            command += ["--interval", str(interval)]
            with (work / "worker.log").open("wb") as log:
                proc = subprocess.Popen(
                    command, env=settings_env(settings), cwd=REPO, stdout=log, stderr=log
                )
            try:
                seconds = asyncio.run(_wait_scored(env.broker, settings.scored_topic, records, 600))
                print(f"{records} records scored in {seconds:.1f} s (profiled)")
            finally:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            kafka.stop()
    gc_report = json.loads((RESULTS / "profile-gc.json").read_text())
    print("garbage collections by generation:", json.dumps(gc_report["summary"]))
    print(f"profile: {RESULTS / 'profile.txt'} and profile-flat.txt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument(
        "--interval", type=float, default=0.001, help="sampling interval, s; 0: no sampling"
    )
    parser.add_argument("--as-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.as_worker is not None:
        sys.argv = sys.argv[:1]
        _as_worker(args.as_worker, args.interval)
    else:
        _drive(args.records, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
