"""The whole local stack in one command: broker, worker, models, records, swaps.

Starts a real Kafka broker from the project's own jars, a hotswap worker, trains
the example models, publishes version 1, streams demo records, then tells a short
story, each step taken once the worker shows the previous one happened (never on a
timer alone, so a slow machine only makes it longer): another model kind (v2) is
served, a corrupt v3 is rejected while v2 keeps serving, v4 goes to shadow and is
promoted once compared on enough records, v5 (a deliberately weak model) goes out as a
canary and the true labels the producer streams beside the records abort it on quality.
Then a new version every ``--swap-every`` seconds. A second stream runs beside it:
Avro payments on ``payments``, framed with a schema of a real Schema Registry
(Apicurio), scored in enrich mode by a fraud model into ``payments.scored``
(``scripts/demo_payments.py``). Ctrl-C (or ``--duration``, counted once the story
is told and an enriched payment was read back) stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.demo_payments import PaymentStream, write_routes  # noqa: E402
from scripts.localkafka import LocalKafka, fetch, free_port  # noqa: E402
from scripts.localregistry import LocalRegistry  # noqa: E402
from scripts.localregistry import fetch as fetch_registry  # noqa: E402
from service.core.settings import Settings  # noqa: E402

KINDS = ["wine-logreg", "wine-forest", "wine-tree"]
EVENT_BOUND = 180.0  # seconds a step may take before the demo gives up on it
COMPARE = 300  # records the shadow is compared on before the demo promotes it
LABELLED = 200  # labelled records both versions scored before the labels decide on a canary


#: Every look at the worker goes through this client: ``httpx.get`` builds a client, and an
#: SSL context with it (~40 ms of CPU), per call, and the demo looks several times a second.
#: No keep-alive: a connection is never reused across a worker's restart.
_HTTP = httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0))


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HOTSWAP_BROKER": settings.broker,
            "HOTSWAP_HTTP_PORT": str(settings.http_port),
            "HOTSWAP_DATA_DIR": settings.data_dir,
            "HOTSWAP_ROUTES": settings.routes,
            "HOTSWAP_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
        }
    )
    return env


def _hotswap(*args: str) -> list[str]:
    return [sys.executable, "-m", "service", *args]


def _publish(settings: Settings, models: Path, kind: str, version: int, *flags: str) -> None:
    subprocess.run(
        _hotswap(
            "publish",
            str(models / f"{kind}.joblib"),
            "--name",
            "wine",
            "--version",
            str(version),
            "--description",
            f"{kind} (demo)",
            *flags,
        ),
        env=_env(settings),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if "--shadow" in flags:
        print(f"[demo] wine version {version} ({kind}) in shadow: it scores to scored.shadow")
    elif "--canary" in flags:
        print(
            f"[demo] wine version {version} ({kind}) as a canary, decided by the labels "
            f"({' '.join(flags)})"
        )
    else:
        print(f"[demo] published wine version {version} ({kind})")


def _promote(settings: Settings, url: str) -> None:
    try:
        report = _HTTP.get(f"{url}/models/wine/rollout", timeout=2).json()["report"]
    except (httpx.HTTPError, ValueError, KeyError):
        report = {}
    why = f"compared {report.get('compared')}, agreement {report.get('agreement')}"
    subprocess.run(
        _hotswap("promote", "wine", "--why", f"demo: {why}"),
        env=_env(settings),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"[demo] promoted the candidate ({why})")


def _publish_corrupt(settings: Settings, version: int) -> None:
    from aiokafka import AIOKafkaProducer

    artifact = b"definitely not an ONNX model"
    message = {
        "name": "wine",
        "version": str(version),
        "format": "onnx",
        "data": base64.b64encode(artifact).decode(),
        "sha256": hashlib.sha256(b"something else").hexdigest(),
    }

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(settings.model_topic, orjson.dumps(message), key=b"wine")
        finally:
            await producer.stop()

    asyncio.run(send())
    print(f"[demo] published a corrupt wine version {version} (sha256 mismatch): watch it bounce")


def _scored_total(url: str) -> float:
    text = _HTTP.get(f"{url}/metrics", timeout=2).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hotswap_records_scored_total{")
    )


def _get(url: str) -> Any:
    """A worker view as JSON, or None while it does not answer (the demo waits on it)."""
    try:
        response = _HTTP.get(url, timeout=2)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _serving(url: str, version: int) -> bool:
    model = _get(f"{url}/models/wine")
    return model is not None and model.get("version") == str(version)


def _rejected(url: str, version: int) -> bool:
    history = _get(f"{url}/models/wine/history") or []
    return any(h["version"] == str(version) and h["status"] == "rejected" for h in history)


def _aborted(url: str, version: int) -> bool:
    history = _get(f"{url}/models/wine/history") or []
    return any(h["version"] == str(version) and h["status"] == "aborted" for h in history)


def _quality(settings: Settings, url: str, version: int) -> None:
    """Print why the labels aborted ``version`` and the live quality table."""
    history = _get(f"{url}/models/wine/history") or []
    why = next(
        h["why"] for h in history if h["version"] == str(version) and h["status"] == "aborted"
    )
    print(f"[demo] the labels aborted wine v{version}: {why}")
    table = subprocess.run(
        _hotswap("quality", "wine", "--url", url),
        env=_env(settings),
        capture_output=True,
        text=True,
    )
    print(table.stdout.rstrip() or table.stderr.rstrip())


def _compared(url: str, records: int) -> bool:
    rollout = _get(f"{url}/models/wine/rollout")
    return rollout is not None and (rollout.get("report") or {}).get("compared", 0) >= records


def _status(url: str, last: tuple[float, float]) -> tuple[float, float]:
    try:
        model = _HTTP.get(f"{url}/models/wine", timeout=2).json()
        history = _HTTP.get(f"{url}/models/wine/history", timeout=2).json()
        total = _scored_total(url)
    except (httpx.HTTPError, ValueError):
        print("[demo] worker not answering yet")
        return last
    now = time.monotonic()
    rate = (total - last[1]) / (now - last[0]) if now > last[0] else 0.0
    rejected = [h for h in history if h["status"] == "rejected"]
    note = (
        f", last rejection: v{rejected[-1]['version']} {rejected[-1]['reason']}" if rejected else ""
    )
    print(
        f"[demo] wine v{model['version']} ({model['description']}): "
        f"{model['records_scored']} scored by it, {int(total)} in all, {rate:.0f} rec/s, "
        f"predict p99 {model['latency_ms']['p99']} ms{note}"
    )
    rollout = _HTTP.get(f"{url}/models/wine/rollout", timeout=2)
    if rollout.status_code == 200 and rollout.json()["stage"] in {"shadow", "canary"}:
        view = rollout.json()
        print(
            f"[demo] rollout of wine v{view['candidate']}: {view['stage']}, compared "
            f"{view['report']['compared']}, agreement {view['report']['agreement']}"
        )
    return now, total


@dataclass
class Wait:
    """What the story waits for before its next step: a time, or an event the worker shows.

    An event has a bound (``within`` seconds), generous on purpose: on a slow machine the
    story only takes longer; past the bound the demo stops and says which step never happened.
    """

    what: str
    done: Callable[[], bool]
    within: float | None = None


class Story:
    """The demo's steps, each taken once the worker shows the previous one happened.

    v2 (another model kind) is served; a corrupt v3 is rejected while v2 keeps serving;
    v4 runs in shadow until it has been compared on ``compare`` records, then is promoted
    and served; v5, a one-split tree, goes out as a canary decided by the labels the
    producer streams, which abort it. After that, a new version every ``swap_every``
    seconds, each waited for.
    """

    def __init__(self, settings: Settings, url: str, models: Path, swap_every: float) -> None:
        self.told = False  # the scripted steps (v2 .. v4 promoted) have all happened
        self._steps = self._script(settings, url, models, swap_every)
        self._wait: Wait = next(self._steps)
        self._since = time.monotonic()
        self._url = url

    def tick(self, last: tuple[float, float]) -> tuple[float, float]:
        """Take every step whose wait is over; raise if an event missed its bound."""
        while self._wait.done():
            if self._wait.within is not None:  # an event: show what the worker reports now
                last = _status(self._url, last)
            self._wait = next(self._steps)
            self._since = time.monotonic()
        bound = self._wait.within
        if bound is not None and time.monotonic() - self._since > bound:
            raise RuntimeError(f"waited {bound:.0f} s for {self._wait.what}; see the worker log")
        return last

    def _script(
        self, settings: Settings, url: str, models: Path, swap_every: float
    ) -> Iterator[Wait]:
        def pause() -> Wait:
            until = time.monotonic() + swap_every
            return Wait(f"{swap_every:.0f} s", lambda: time.monotonic() >= until)

        yield pause()
        _publish(settings, models, KINDS[1], 2)
        yield Wait("wine v2 to be served", lambda: _serving(url, 2), EVENT_BOUND)
        yield pause()
        _publish_corrupt(settings, 3)
        yield Wait("wine v3 to be rejected", lambda: _rejected(url, 3), EVENT_BOUND)
        yield pause()
        _publish(settings, models, KINDS[1], 4, "--shadow")
        yield Wait("the shadow to be compared", lambda: _compared(url, COMPARE), EVENT_BOUND)
        _promote(settings, url)
        yield Wait("wine v4 to be served", lambda: _serving(url, 4), EVENT_BOUND)
        yield pause()
        truth = ["--min-labels", str(LABELLED), "--max-quality-loss", "0.05"]
        _publish(settings, models, "wine-stump", 5, "--canary", "0.2", *truth)
        yield Wait("the labels to abort wine v5", lambda: _aborted(url, 5), EVENT_BOUND)
        _quality(settings, url, 5)
        self.told = True
        version = 5
        while True:
            yield pause()
            version += 1
            _publish(settings, models, KINDS[(version - 1) % len(KINDS)], version)
            yield Wait(
                f"wine v{version} to be served", partial(_serving, url, version), EVENT_BOUND
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9092, help="Kafka port")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--rate", type=float, default=500, help="demo records per second")
    parser.add_argument("--swap-every", type=float, default=30, help="seconds between versions")
    parser.add_argument("--duration", type=float, default=0, help="stop after N s (0 = Ctrl-C)")
    parser.add_argument("--state-dir", type=Path, default=REPO / ".cache" / "demo")
    args = parser.parse_args()

    state = args.state_dir
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    settings = Settings(
        broker=f"kafka://127.0.0.1:{args.port}",
        http_port=args.http_port,
        data_dir=str(state / "worker"),
    )
    url = f"http://localhost:{args.http_port}"
    fetch()
    fetch_registry()
    kafka = LocalKafka(args.port, state / "kafka")
    registry = LocalRegistry(free_port(), log_path=state / "registry.log")
    payments: PaymentStream | None = None
    procs: list[subprocess.Popen[bytes]] = []
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(f"[demo] starting Kafka on 127.0.0.1:{args.port} …")
        kafka.start()
        print("[demo] starting the Schema Registry (Apicurio) …")
        registry.start()
        routes = write_routes(state / "routes.yaml", settings.data_topic, settings.scored_topic)
        settings = settings.model_copy(
            update={"routes": str(routes), "schema_registry_url": registry.url}
        )
        print("[demo] training the example models …")
        subprocess.run(
            _hotswap("train", "--out", str(state / "models")),
            env=_env(settings),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        version = 1
        _publish(settings, state / "models", KINDS[0], version)
        payments = PaymentStream(settings, _env(settings), state / "models")
        log = (state / "worker.log").open("wb")
        procs.append(
            subprocess.Popen(_hotswap("worker"), env=_env(settings), stdout=log, stderr=log)
        )
        deadline = time.monotonic() + 180  # a bound for a slow machine, not a budget
        while time.monotonic() < deadline and not stop["now"]:
            try:
                if _HTTP.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"worker not ready; see {state / 'worker.log'}")
        procs.append(
            subprocess.Popen(
                _hotswap("produce", "--count", "0", "--rate", str(args.rate), "--labels"),
                env=_env(settings),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        print(
            f"[demo] ready. Try:\n"
            f"         curl {url}/models/wine\n"
            f"         curl {url}/models/wine/history\n"
            f"         curl {url}/metrics\n"
            f"         {url}/docs (API docs)\n"
            f"       topics: models (compacted), records -> scored, bad records -> records.dlq\n"
            f"       version 4 goes to shadow, then is promoted: {url}/models/wine/rollout\n"
            f"       labels -> live quality and drift: {url}/models/wine/quality, "
            f"{url}/models/wine/drift\n"
            f"       Avro payments -> payments.scored (enriched), registry {registry.url}\n"
            f"       worker log: {state / 'worker.log'}; Ctrl-C stops everything"
        )
        payments.start(rate=20)
        sampled = False
        started = last_print = time.monotonic()
        last = (started, 0.0)
        story = Story(settings, url, state / "models", args.swap_every)
        while not stop["now"]:
            time.sleep(0.5)
            last = story.tick(last)
            now = time.monotonic()
            if args.duration and now - started > args.duration and story.told and sampled:
                break
            if now - last_print >= 5:
                last, last_print = _status(url, last), now
            if not sampled and payments.enriched is not None:
                print(f"[demo] payments.scored (Avro, enriched): {payments.enriched}")
                sampled = True
    finally:
        print("[demo] stopping …")
        if payments is not None:
            payments.stop()
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        kafka.stop()
        registry.stop()
        print("[demo] stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
