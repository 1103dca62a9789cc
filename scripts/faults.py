"""Fault scenarios on a real broker, counting every record: nothing may be lost.

Each scenario streams records at a steady rate while something fails (a
worker killed with SIGKILL, workers joining and leaving, the broker stopped
and restarted, a worker started before its broker, a SIGTERM), then reads the
scored and dead-letter topics and reports sent, scored, dead-lettered,
duplicated and lost. Used by ``tests/e2e/test_faults.py`` (short runs)
and, as a script, for the long runs in docs/reference/guarantees.md::

    .venv/bin/python scripts/faults.py --records 100000 --rate 5000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.harness import (  # noqa: E402
    WorkerProcess,
    consume,
    isolated_settings,
    publish_file,
    wait_for,
)
from scripts.localkafka import LocalKafka, fetch, free_port  # noqa: E402
from service.core.settings import Settings  # noqa: E402

__all__ = ["SCENARIOS", "FaultRun", "Stream", "Tally"]


@dataclass
class Tally:
    scenario: str
    sent: int
    scored: int
    dead_lettered: int
    duplicates: int
    lost: int
    input_copies: int = 0  # extra copies of a record on the data topic itself
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)

    def row(self) -> str:
        notes = self.notes + [f"{k}: {'yes' if v else 'NO'}" for k, v in self.checks.items()]
        if self.input_copies:
            notes.append(f"{self.input_copies} written twice to the data topic by the sender")
        return (
            f"| {self.scenario} | {self.sent} | {self.scored} | {self.dead_lettered} | "
            f"{self.duplicates} | {self.lost} | {'; '.join(notes)} |"
        )


class Stream(threading.Thread):
    """Sends ``count`` records at ``rate``/s; ``acked`` holds the ids the broker confirmed."""

    def __init__(self, settings: Settings, count: int, rate: float, prefix: str) -> None:
        super().__init__(daemon=True)
        self.settings, self.count, self.rate, self.prefix = settings, count, rate, prefix
        self.acked: set[str] = set()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc

    async def _run(self) -> None:
        rows = [[float(i % 7 + j) for j in range(13)] for i in range(50)]
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            linger_ms=5,
            acks="all",
            enable_idempotence=True,  # a retry through the outage must not write a record twice
            request_timeout_ms=120_000,
            retry_backoff_ms=200,
        )
        await producer.start()
        pending: list[tuple[str, asyncio.Future[object]]] = []
        started = time.monotonic()
        try:
            for i in range(self.count):
                rid = f"{self.prefix}-{i}"
                value = orjson.dumps({"id": rid, "model": "wine", "features": rows[i % 50]})
                pending.append(
                    (rid, await producer.send(self.settings.data_topic, value, key=rid.encode()))
                )
                self.sent = i + 1
                ahead = (i + 1) / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
                if len(pending) >= 1000:
                    await self._settle(pending)
            await self._settle(pending)
        finally:
            await producer.stop()

    async def _settle(self, pending: list[tuple[str, asyncio.Future[object]]]) -> None:
        for rid, fut in pending:
            try:
                await fut
                self.acked.add(rid)
            except Exception:
                pass  # never acknowledged: not counted as sent, so not counted as lost
        pending.clear()


def tally(scenario: str, settings: Settings, ids: set[str], timeout: float = 120) -> Tally:
    """Read scored and dead-letter topics until every id is accounted for (or timeout)."""
    seen: Counter[str] = Counter()
    dead: set[str] = set()

    scored = consume(
        settings,
        settings.scored_topic,
        until=lambda rs: len({r.json()["id"] for r in rs} & ids) >= len(ids),
        timeout=timeout,
    )
    for r in scored:
        seen[r.json()["id"]] += 1
    missing = ids - set(seen)
    if missing:
        for r in consume(settings, settings.dead_letter_topic, until=lambda rs: False, timeout=3):
            if r.value:
                rid = orjson.loads(r.value).get("id")
                if rid in ids:
                    dead.add(rid)
    # A record the stream's producer wrote twice is two records to the worker: each
    # must be scored, so a duplicate is an output beyond the copies on the data topic.
    inputs: Counter[str] = Counter(
        r.json()["id"]
        for r in consume(
            settings,
            settings.data_topic,
            until=lambda rs: len({r.json()["id"] for r in rs} & ids) >= len(ids),
            timeout=timeout,
        )
    )
    copies = sum(inputs[rid] - 1 for rid in ids if inputs[rid] > 1)
    duplicates = sum(max(0, n - max(1, inputs[rid])) for rid, n in seen.items() if rid in ids)
    lost = len(ids - set(seen) - dead)
    return Tally(scenario, len(ids), len(set(seen) & ids), len(dead), duplicates, lost, copies)


@dataclass
class FaultRun:
    """Shared setup: a broker, trained model, unique topics per scenario."""

    kafka: LocalKafka
    workdir: Path
    model_path: Path
    records: int = 5000
    rate: float = 2000.0
    guarantee: str = "at_least_once"
    started: list[WorkerProcess] = field(default_factory=list)  # for :meth:`kill_all`

    def settings(self, **overrides: object) -> Settings:
        settings = isolated_settings(
            self.kafka.bootstrap,
            self.workdir,
            "f",
            session_timeout=6.0,
            processing_guarantee=self.guarantee,
        )
        return settings.model_copy(update=overrides) if overrides else settings

    def worker(self, settings: Settings, port: int | None = None) -> WorkerProcess:
        if port is not None:
            settings = settings.model_copy(update={"http_port": port})
        log = self.workdir / f"worker-{settings.http_port}-{uuid.uuid4().hex[:4]}.log"
        worker = WorkerProcess(settings, log).start()
        self.started.append(worker)
        return worker

    def kill_all(self) -> None:
        """Whatever a scenario started and left running (it failed half-way): killed."""
        for worker in self.started:
            worker.kill()

    def prepare(self, settings: Settings) -> None:
        publish_file(settings, self.model_path, "wine", "1")

    def stream(self, settings: Settings) -> Stream:
        stream = Stream(settings, self.records, self.rate, uuid.uuid4().hex[:6])
        stream.start()
        return stream

    @staticmethod
    def at_fraction(stream: Stream, fraction: float) -> None:
        wait_for(lambda: stream.sent >= stream.count * fraction, 300, f"{fraction:.0%} sent")

    @staticmethod
    def finish(stream: Stream) -> set[str]:
        stream.join(600)
        if stream.error is not None:
            raise stream.error
        return stream.acked


def _two_workers(run: FaultRun) -> tuple[Settings, WorkerProcess, WorkerProcess, Stream]:
    """A model, two ready workers in one group, and a stream of records under way."""
    settings = run.settings()
    run.prepare(settings)
    a, b = run.worker(settings), run.worker(settings, free_port())
    a.wait_ready()
    b.wait_ready()
    return settings, a, b, run.stream(settings)


def _stop_all(result: Tally, *workers: WorkerProcess) -> Tally:
    for w in workers:
        w.stop()
    return result


def worker_kill(run: FaultRun) -> Tally:
    """Two workers; SIGKILL one a third of the way in, restart it at two thirds."""
    settings, a, b, stream = _two_workers(run)
    run.at_fraction(stream, 1 / 3)
    a.kill()
    run.at_fraction(stream, 2 / 3)
    a = run.worker(settings, a.settings.http_port)
    a.wait_ready()
    ids = run.finish(stream)
    return _stop_all(tally("kill -9 a worker (2 workers), restart it", settings, ids), a, b)


def rebalance(run: FaultRun) -> Tally:
    """Start with one worker, add two, then stop the first: three rebalances mid-stream."""
    settings = run.settings()
    run.prepare(settings)
    first = run.worker(settings)
    first.wait_ready()
    stream = run.stream(settings)
    run.at_fraction(stream, 0.2)
    second = run.worker(settings, free_port())
    run.at_fraction(stream, 0.4)
    third = run.worker(settings, free_port())
    run.at_fraction(stream, 0.6)
    first.stop()
    ids = run.finish(stream)
    result = tally("3 workers: two join, one leaves, mid-stream", settings, ids)
    for w in (second, third):  # on a slow machine one may still be starting its HTTP side
        w.wait_ready()
    versions = {w.model_version("wine") for w in (second, third)}
    result.notes.append(f"survivors serve wine v{','.join(sorted(v or '-' for v in versions))}")
    for w in (second, third):
        w.stop()
    return result


def broker_restart(run: FaultRun) -> Tally:
    """Stop the broker mid-stream, check readiness drops, start it on the same data, recount."""
    settings = run.settings()
    run.prepare(settings)
    worker = run.worker(settings)
    worker.wait_ready()
    stream = run.stream(settings)
    run.at_fraction(stream, 0.4)
    run.kafka.stop()
    wait_for(lambda: worker.get("/ready").status_code == 503, 30, "readiness to drop")
    alive = worker.get("/health").status_code == 200
    run.kafka.start()
    worker.wait_ready(60)
    ids = run.finish(stream)
    result = tally("broker stopped and restarted", settings, ids)
    result.checks.update({"ready false then true": True, "alive while broker down": alive})
    worker.stop()
    return result


def broker_down_at_start(run: FaultRun) -> Tally:
    """A worker started while the broker is down waits, reports not ready, then scores."""
    settings = run.settings()
    run.prepare(settings)
    run.kafka.stop()
    worker = run.worker(settings)
    wait_for(lambda: worker.get("/health").status_code == 200, 60, "HTTP up while broker down")
    not_ready = worker.get("/ready").status_code == 503
    time.sleep(3)  # the broker stays away a while: the worker must keep retrying, not exit
    survived = worker.proc is not None and worker.proc.poll() is None
    run.kafka.start()
    worker.wait_ready(60)
    stream = run.stream(settings)
    ids = run.finish(stream)
    result = tally("worker started while the broker was down", settings, ids)
    result.checks.update({"not ready while down": not_ready, "kept running": survived})
    worker.stop()
    return result


def sigterm(run: FaultRun) -> Tally:
    """SIGTERM a worker mid-stream and restart it: a graceful stop makes no duplicates."""
    settings = run.settings()
    run.prepare(settings)
    worker = run.worker(settings)
    worker.wait_ready()
    stream = run.stream(settings)
    run.at_fraction(stream, 0.5)
    worker.signal(signal.SIGTERM)
    code = worker.proc.wait(60) if worker.proc is not None else None
    worker = run.worker(settings, worker.settings.http_port)
    worker.wait_ready()
    ids = run.finish(stream)
    result = tally("SIGTERM a worker, restart it", settings, ids)
    result.checks["exit code 0"] = code == 0
    worker.stop()
    return result


def kill_twice(run: FaultRun) -> Tally:
    """Two workers; SIGKILL one mid-stream, and again while it restarts."""
    settings, a, b, stream = _two_workers(run)
    run.at_fraction(stream, 0.3)
    a.kill()
    a = run.worker(settings, a.settings.http_port)
    wait_for(lambda: a.get("/health").status_code == 200, 60, "restarting worker answers")
    a.kill()  # during its start-up: replaying models or joining the group
    run.at_fraction(stream, 0.6)
    a = run.worker(settings, a.settings.http_port)
    a.wait_ready()
    ids = run.finish(stream)
    return _stop_all(tally("kill -9 a worker, again during its restart", settings, ids), a, b)


def zombie(run: FaultRun) -> Tally:
    """SIGSTOP a worker past the session timeout (its partitions move), then SIGCONT it."""
    settings, a, b, stream = _two_workers(run)
    run.at_fraction(stream, 0.3)
    a.signal(signal.SIGSTOP)
    partitions = settings.data_partitions
    wait_for(
        lambda: b.get("/ready").json().get("assigned_partitions") == partitions,
        60,
        "the live worker to take every partition",
    )
    a.signal(signal.SIGCONT)
    ids = run.finish(stream)
    result = tally("zombie: SIGSTOP past the session timeout, then SIGCONT", settings, ids)
    if a.proc is not None and a.proc.poll() is not None:
        result.notes.append(f"the zombie stopped itself (exit {a.proc.returncode})")
    return _stop_all(result, a, b)


SCENARIOS: dict[str, Callable[[FaultRun], Tally]] = {
    "worker-kill": worker_kill,
    "rebalance": rebalance,
    "broker-restart": broker_restart,
    "broker-down-at-start": broker_down_at_start,
    "sigterm": sigterm,
    "kill-twice": kill_twice,
    "zombie": zombie,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--guarantee",
        action="append",
        choices=["at_least_once", "exactly_once"],
        help="processing guarantee(s) to run (default: both)",
    )
    args = parser.parse_args()
    from models.train import train_model

    # The clients in this process retry through the broker outage; their logs would drown the table.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    fetch()
    with tempfile.TemporaryDirectory(prefix="hotswap-faults-") as tmp:
        workdir = Path(tmp)
        model = train_model("wine-logreg", workdir / "models")
        kafka = LocalKafka(free_port(), workdir / "kafka")
        kafka.start()
        print(
            f"{args.records} records per scenario at {args.rate:.0f}/s, Kafka at {kafka.bootstrap}"
        )
        print("| guarantee | scenario | sent | scored | dead-lettered | dupes | lost | notes |")
        print("|---|---|---|---|---|---|---|---|")
        failed = False
        try:
            for guarantee in args.guarantee or ["at_least_once", "exactly_once"]:
                run = FaultRun(
                    kafka, workdir, model, records=args.records, rate=args.rate, guarantee=guarantee
                )
                for name in args.only or list(SCENARIOS):
                    try:
                        result = SCENARIOS[name](run)
                    finally:
                        run.kill_all()
                    failed |= result.lost > 0
                    failed |= guarantee == "exactly_once" and result.duplicates > 0
                    print(f"| {guarantee} {result.row()}", flush=True)
        finally:
            kafka.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
