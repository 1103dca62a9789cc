"""Driving real workers and topics from tests, fault runs and benchmarks.

Worker subprocesses with their HTTP probes, publishing, raw sends and topic
reads, all against a real broker; shared so that a test, the fault report and
the benchmarks measure the same way.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from scripts.localkafka import free_port
from service.core.settings import Settings
from service.kafka.clients import partitions_of
from service.tools.publish import PublishRequest, build_message, publish_message

__all__ = [
    "ConsumedRecord",
    "RolloutStart",
    "WorkerProcess",
    "consume",
    "http_client",
    "isolated_settings",
    "publish_file",
    "run_cli",
    "send_raw",
    "settings_env",
    "wait_for",
]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def isolated_settings(
    bootstrap: str, data_dir: Path, prefix: str, *, tag: str = "", **overrides: object
) -> Settings:
    """Settings with topics, group, HTTP and gRPC ports of their own (``prefix`` + a tag).

    Every test, fault run and benchmark builds its worker settings here, so
    none of them shares a topic, a group or a port with another. Calls with the
    same ``tag`` share topics and group (several workers of one test), each with
    its own port and scratch directory.
    """
    tag = f"{prefix}{tag or uuid.uuid4().hex[:8]}"
    values: dict[str, object] = {
        "broker": f"kafka://{bootstrap}",
        "model_topic": f"{tag}-models",
        "archive_topic": f"{tag}-models.archive",
        "data_topic": f"{tag}-records",
        "scored_topic": f"{tag}-scored",
        "dead_letter_topic": f"{tag}-records.dlq",
        "control_topic": f"{tag}-models.control",
        "shadow_topic": f"{tag}-scored.shadow",
        "status_topic": f"{tag}-status",
        "labels_topic": f"{tag}-labels",
        "app_id": f"hotswap-{tag}",
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "grpc_port": free_port(),
        "data_dir": str(data_dir / f"worker-{uuid.uuid4().hex[:6]}"),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``HOTSWAP_*`` environment that reproduces ``settings`` in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSWAP_")}
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"HOTSWAP_{name.upper()}"] = str(value)
    return env


#: The least any wait for an event is bounded by (seconds; ``HOTSWAP_TEST_WAIT_FLOOR``).
#: A wait ends as soon as its event happens, so a generous bound costs a green run nothing,
#: and a slow or loaded machine (CI on 2 cores) only makes the run longer, never red.
WAIT_FLOOR = float(os.environ.get("HOTSWAP_TEST_WAIT_FLOOR", "120"))


@functools.cache
def http_client() -> httpx.Client:
    """The one HTTP client of this process's probes of workers (``timeout`` 5 s).

    ``httpx.get`` builds a client, and with it an SSL context (~40 ms of CPU), on every
    call, and :func:`wait_for` probes 20 times a second: shared, a probe costs ~2 ms.
    Without keep-alive, so a worker restarted on the same port is never asked over a
    connection its predecessor held.
    """
    return httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout.

    ``timeout`` is what the event usually takes at most; the bound is never below
    :data:`WAIT_FLOOR`, since how fast an event comes depends on the machine.
    """
    timeout = max(timeout, WAIT_FLOOR)
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class WorkerProcess:
    """A ``hotswap worker`` subprocess with its own log file."""

    settings: Settings
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "worker"],
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        return self

    def get(self, path: str) -> httpx.Response:
        return http_client().get(self.url + path)

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            return self.get("/ready").status_code == 200

        wait_for(ready, timeout, f"worker {self.settings.http_port} ready")

    def model_version(self, name: str) -> str | None:
        response = self.get(f"/models/{name}")
        return str(response.json()["version"]) if response.status_code == 200 else None

    def metric(self, sample: str) -> float:
        """Sum of every sample line starting with ``sample`` on /metrics."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(sample):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stacks(self, timeout: float = 10.0) -> str:
        """Every thread's stack and every asyncio task of the running worker (its SIGUSR1:
        the stack dump of Faust's runtime, written to the log), or "" if it is not running.

        For a failed test: where a worker that went silent is waiting."""
        if self.proc is None or self.proc.poll() is not None:
            return ""
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.signal(signal.SIGUSR1)

        deadline = time.monotonic() + timeout  # no WAIT_FLOOR: a blocked loop never answers
        text, size = "", -1
        while time.monotonic() < deadline:
            time.sleep(0.5)
            with self.log_path.open("rb") as log:
                log.seek(start)
                now = log.read().decode(errors="replace")
            if "TASKS" in text and len(now) == size:  # the dump has stopped growing
                return text
            text, size = now, len(now)
        if "TASKS" in text:
            return text
        return "(no stack dump: the event loop did not answer SIGUSR1)"

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run_cli(
    settings: Settings, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``hotswap ARGS`` as a user would, with ``settings`` as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def publish_file(
    settings: Settings,
    path: Path,
    name: str,
    version: str,
    *,
    signing_key: Path | None = None,
    rollout: RolloutStart | None = None,
    **extra: Any,
) -> None:
    """What ``hotswap publish`` does (converted, signed with ``signing_key``, published, or
    rolled out as ``rollout`` says), done in this process.

    For tests whose subject is not the command line: a ``hotswap publish`` subprocess
    spends ~3 s of CPU importing scikit-learn before it converts anything, while this
    process has it loaded already. ``extra``: the other fields of a :class:`PublishRequest`.
    """
    message = build_message(PublishRequest(path=path, name=name, version=version, **extra))
    key = None
    if signing_key is not None:
        from service.core.signing import load_private_key, sign_message

        key = load_private_key(signing_key)
        message = sign_message(message, key)
    if rollout is None:
        asyncio.run(publish_message(settings, message))
        return
    from service.tools.rollouts import policy_of, start_rollout

    r = rollout
    policy = policy_of(r.promote_after, r.min_agreement, r.max_p99_ms, r.max_error_rate, True,
                       r.min_labels, r.max_quality_loss)  # fmt: skip
    start_rollout(settings, message, canary=rollout.canary, policy=policy, why=rollout.why, key=key)


@dataclass(frozen=True)
class RolloutStart:
    """``--shadow`` (``canary`` None) or ``--canary FRACTION``, and the policy options of
    ``hotswap publish``, for :func:`publish_file` (no policy: promoted by hand)."""

    canary: float | None = None
    why: str = ""
    promote_after: int | None = None
    min_agreement: float | None = None
    max_p99_ms: float | None = None
    max_error_rate: float = 0.0
    min_labels: int | None = None
    max_quality_loss: float | None = None


def send_raw(
    settings: Settings,
    topic: str,
    items: Sequence[tuple[bytes | None, bytes | None]],
    partition: int | None = None,
) -> None:
    """Send (key, value) pairs as they are, in order, and wait for the broker.

    ``partition``: all of them to that partition instead of by key.
    """

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
        await producer.start()
        try:
            futures = [
                await producer.send(topic, value, key=key, partition=partition)
                for key, value in items
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(run())


@dataclass(frozen=True)
class ConsumedRecord:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int

    def json(self) -> Any:
        assert self.value is not None
        return orjson.loads(self.value)


def consume(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[ConsumedRecord]], bool],
    timeout: float = 180,
) -> list[ConsumedRecord]:
    """Read ``topic`` from the beginning (no group, committed records only) until ``until``.

    ``timeout`` ends the read: a bound for a wait (generous: it ends at ``until``), or how
    long to look when ``until`` never holds (to show that nothing arrives).
    """

    async def run() -> list[ConsumedRecord]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            isolation_level="read_committed",  # what an exactly_once reader sets
        )
        await consumer.start()
        records: list[ConsumedRecord] = []
        deadline = time.monotonic() + timeout
        try:
            # A topic not created yet has no records: wait for it to appear rather than
            # assign a partition that does not exist (aiokafka then stalls for ~40 s).
            while not (partitions := await partitions_of(consumer, topic)):
                if until(records) or time.monotonic() >= deadline:
                    return records
                await asyncio.sleep(0.2)
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while time.monotonic() < deadline and not until(records):
                batch = await consumer.getmany(timeout_ms=200)
                for tp, messages in batch.items():
                    records.extend(
                        ConsumedRecord(m.key, m.value, dict(m.headers), tp.partition, m.offset)
                        for m in messages
                    )
        finally:
            await consumer.stop()
        return records

    return asyncio.run(run())
