"""``python -m bench``: hotswap beside its baselines, on a real local broker, in one run.

Starts its own Kafka broker (a free port, a temporary directory), trains the
wine models, runs the selected sections, prints a table and writes
``bench/results/latest.json``. Everything it starts is stopped and removed on
the way out, also on Ctrl-C. Sections (``--only``): ``throughput`` and
``latency`` (the contenders side by side), ``swap`` (publish-to-first-scored
and output gaps over 50 swaps), ``large`` (a forest of tens of MB by
reference), ``memory`` (RSS after 5 and 500 swaps). ``--quick`` is a smoke
run. Contenders (``--contenders``): floor_aiokafka and floor_confluent (the
same raw at-least-once loop with each client; the faster is "the floor"),
at_least_once and exactly_once (a hotswap worker with that
HOTSWAP_PROCESSING_GUARANTEE), naive (the Faust per-record design).

Example, the two floors only, briefly:
  python -m bench --only throughput,latency --contenders floor_aiokafka,floor_confluent --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.env import CONTENDERS, Env
from bench.kafkaio import jsonable
from bench.memory import memory
from bench.report import render
from bench.swaps import large_model, swaps
from bench.throughput import latency, throughput
from scripts.localkafka import KAFKA_VERSION, LocalKafka, fetch, free_port

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
SECTIONS = ("throughput", "latency", "swap", "large", "memory")


def _plan(args: argparse.Namespace) -> dict[str, Callable[[Env], dict[str, Any]]]:
    quick = args.quick
    plan: dict[str, Callable[[Env], dict[str, Any]]] = {
        "throughput": lambda env: throughput(
            env, args.records, 1 if quick else args.repeat, args.contenders
        ),
        "latency": lambda env: latency(
            env, seconds=5 if quick else args.latency_seconds, contenders=args.contenders
        ),
        "swap": lambda env: swaps(env, versions=10 if quick else 50),
        "large": lambda env: large_model(env, trees=150 if quick else 600),
        "memory": lambda env: memory(env, many=50 if quick else 500),
    }
    return {name: plan[name] for name in SECTIONS if name in args.only}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--records", type=int, help="records per throughput run (200,000; naive: a tenth)"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, for throughput and latency: {','.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="throughput runs of the floors and hotswap (the median counts; the best is shown)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=60,
        help="seconds of steady load (2,000 records/s) per contender in the latency section",
    )
    parser.add_argument("--quick", action="store_true", help="a smaller smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON path")
    args = parser.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    chosen = {c.strip() for c in args.contenders.split(",") if c.strip()}
    if chosen - set(CONTENDERS):
        parser.error(f"unknown contenders: {', '.join(sorted(chosen - set(CONTENDERS)))}")
    args.contenders = [c for c in CONTENDERS if c in chosen]
    if args.records is None:
        args.records = 10_000 if args.quick else 200_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, Kafka {KAFKA_VERSION} (local, 1 broker)",
        "command": " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    began = time.monotonic()
    fetch()
    with tempfile.TemporaryDirectory(prefix="hotswap-bench-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        kafka = LocalKafka(free_port(), work / "kafka")
        kafka.start()
        try:
            print(f"broker {kafka.bootstrap}; training the wine models ...", flush=True)
            env = Env.prepare(kafka, work)
            for name, run in _plan(args).items():
                print(f"== {name}", flush=True)
                section_began = time.monotonic()
                results[name] = run(env)
                results[name]["section_seconds"] = round(time.monotonic() - section_began, 1)
                if name not in ("throughput", "latency"):
                    print(f"  {results[name]}", flush=True)
        finally:
            kafka.stop()
    results["total_seconds"] = round(time.monotonic() - began, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(jsonable(results), indent=2) + "\n")
    print(render(results))
    print(f"\ntotal {results['total_seconds']} s; results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
