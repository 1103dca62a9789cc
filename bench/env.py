"""What every section shares: the broker, the trained models, fresh topics, the contenders.

Each run of a contender gets its own topics and consumer group (created with
hotswap's own layout, 4 partitions), so no run sees another's records, and
every contender serves the same wine logistic-regression model: the joblib
estimator for the naive design, its ONNX conversion for the floors and hotswap.

The contenders: two raw floors (the same at-least-once loop written with
aiokafka and with confluent-kafka; the faster one is "the floor"), hotswap
with each ``HOTSWAP_PROCESSING_GUARANTEE``, and the naive Faust design.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from models.train import train_model
from scripts.harness import REPO, WorkerProcess, isolated_settings, settings_env
from scripts.localkafka import LocalKafka
from service.core.messages import ModelMessage, encode_model_message
from service.core.settings import Settings
from service.kafka.clients import ensure_topics
from service.tools.publish import PublishRequest, build_message, publish_message

__all__ = [
    "CONTENDERS",
    "FLOORS",
    "GUARANTEES",
    "LABELS",
    "Contender",
    "Env",
    "exactly_once_supported",
]

FLOORS = ("floor_aiokafka", "floor_confluent")
GUARANTEES = {"at_least_once": "at_least_once", "exactly_once": "exactly_once"}
CONTENDERS = (*FLOORS, *GUARANTEES, "naive")
LABELS = {
    "floor_aiokafka": "floor (aiokafka)",
    "floor_confluent": "floor (confluent)",
    "at_least_once": "hotswap at_least_once",
    "exactly_once": "hotswap exactly_once",
    "naive": "naive (Faust, per record)",
}
_MODULES = {"floor_aiokafka": "bench.floor", "floor_confluent": "bench.floor_confluent"}


def exactly_once_supported() -> bool:
    """Whether this checkout's worker knows ``HOTSWAP_PROCESSING_GUARANTEE``."""
    return "processing_guarantee" in Settings.model_fields


@dataclass
class Contender:
    """A running contender: its process, and the worker handle for hotswap."""

    name: str
    proc: subprocess.Popen[bytes]
    worker: WorkerProcess | None = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; never leaves the process behind."""
        if self.worker is not None:
            self.worker.stop(timeout=20)
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Env:
    kafka: LocalKafka
    work: Path
    logreg: Path  # joblib estimator (naive)
    logreg_onnx: Path  # its ONNX conversion (floor)
    messages: tuple[ModelMessage, ModelMessage]  # wine-logreg, wine-tree, inline

    @classmethod
    def prepare(cls, kafka: LocalKafka, work: Path) -> Env:
        models = work / "models"
        logreg, tree = train_model("wine-logreg", models), train_model("wine-tree", models)
        messages = (
            build_message(PublishRequest(logreg, "wine", "1")),
            build_message(PublishRequest(tree, "wine", "1")),
        )
        onnx = models / "wine-logreg.onnx"
        onnx.write_bytes(base64.b64decode(messages[0].data or ""))
        return cls(kafka, work, logreg, onnx, messages)

    @property
    def broker(self) -> str:
        return self.kafka.bootstrap

    def settings(self) -> Settings:
        """Fresh topics (created now) and a fresh consumer group."""
        settings = isolated_settings(self.kafka.bootstrap, self.work, "b")
        asyncio.run(ensure_topics(settings))
        return settings

    def version(self, i: int, version: str) -> tuple[bytes, bytes]:
        """Key and value of a model message: logreg for even ``i``, tree for odd."""
        message = self.messages[i % 2].model_copy(update={"version": version})
        return message.name.encode(), encode_model_message(message)

    def start(self, name: str, settings: Settings) -> Contender:
        """Start ``name`` on ``settings``' topics (hotswap: with wine version 1 published).

        ``at_least_once`` and ``exactly_once`` are a hotswap worker with that
        ``HOTSWAP_PROCESSING_GUARANTEE`` (passed even to a worker that does not
        know the setting yet: see :func:`exactly_once_supported`).
        """
        log = self.work / f"{name}-{settings.app_id}.log"
        if name in GUARANTEES:
            asyncio.run(publish_message(settings, self.messages[0]))
            env = {**settings_env(settings), "HOTSWAP_PROCESSING_GUARANTEE": GUARANTEES[name]}
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "service", "worker"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            return Contender(name, proc, WorkerProcess(settings, log, proc))
        common = [
            "--broker", self.broker,
            "--data-topic", settings.data_topic,
            "--scored-topic", settings.scored_topic,
            "--group", settings.app_id,
        ]  # fmt: skip
        if name in _MODULES:
            module, extra = _MODULES[name], ["--model", str(self.logreg_onnx)]
            # the worker's batch settings (HOTSWAP_BATCH_SIZE/_TIMEOUT) hold for the floors too
            extra += ["--batch", str(settings.batch_size)]
            extra += ["--timeout-ms", str(round(settings.batch_timeout * 1000))]
        elif name == "naive":
            module = "bench.naive"
            extra = ["--estimator", str(self.logreg), "--datadir", settings.data_dir]
        else:
            raise ValueError(f"unknown contender {name!r} (one of {', '.join(CONTENDERS)})")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *common, *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return Contender(name, proc)
