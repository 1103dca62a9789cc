"""``python -m bench``: hotswap beside its baselines, on a real local broker, in one run.

Prints tables and writes ``bench/results/latest.json``. Ratios matter, not absolute
numbers: the machine is shared and noisy. Sections: ``throughput`` (floor, naive,
hotswap), ``latency`` (end-to-end at a fixed rate), ``swap`` (publish-to-first-scored
and output gaps over 50 swaps), ``large`` (a forest of tens of MB by reference),
``memory`` (RSS after 5 and 500 swaps).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import sections
from bench.sections import Env
from scripts.localkafka import LocalKafka, fetch, free_port

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ["throughput", "latency", "swap", "large", "memory"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=30_000, help="records per throughput run")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated sections")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.quick:
        args.records = min(args.records, 5000)
    fetch()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
    }
    with tempfile.TemporaryDirectory(prefix="hotswap-bench-") as tmp:
        work = Path(tmp)
        kafka = LocalKafka(free_port(), work / "kafka")
        kafka.start()
        try:
            env = Env.prepare(kafka, work, quick=args.quick)
            for name in chosen:
                print(f"\n== {name}", flush=True)
                if name == "throughput":
                    results[name] = sections.throughput(env, args.records)
                elif name == "latency":
                    results[name] = sections.latency(env, seconds=5 if args.quick else 10)
                elif name == "swap":
                    results[name] = sections.swaps(env, versions=10 if args.quick else 50)
                elif name == "large":
                    results[name] = sections.large_model(env)
                elif name == "memory":
                    results[name] = sections.memory(env, many=50 if args.quick else 500)
                print(json.dumps(results[name], indent=2), flush=True)
        finally:
            kafka.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(sections.summary(results))
    print(f"\nwritten to {RESULTS / 'latest.json'}")
    return 0


def _cpus() -> int:
    return int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or 0)


if __name__ == "__main__":
    sys.exit(main())
