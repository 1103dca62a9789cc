"""docker-compose.yml's hotswap services, run on the host against the real local broker.

No Docker engine runs here, so this runs what compose would run: the `topics`
one-shot's topic layout, then each hotswap service's entrypoint + command
(``hotswap ...`` as ``python -m service ...``; the publisher's ``/bin/sh
/app/deploy/demo/publisher.sh`` as the same script from the repository) with
its compose ``environment``. Only what must be unique to this test is
rewritten: the broker (compose's ``kafka:9092``), topics, consumer group, HTTP
port and container paths. The services' compose healthchecks run on the host
too. Then every metric the Grafana dashboard queries must be on the live
workers' /metrics (kafka_* excepted: those come from the kafka-exporter service).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client.parser import text_string_to_metric_families

from scripts.harness import consume, http_client, send_raw, settings_env, wait_for
from service.core.settings import Settings
from tests.deploy.test_deploy_files import (
    REPO,
    base_metric_name,
    compose_services,
    compose_topic_specs,
    dashboard_metric_names,
    dockerfile_stages,
    service_argv,
    service_environment,
)

pytestmark = pytest.mark.integration

COMPOSE_BROKER = "kafka:9092"
#: Settings every started service gets from this test instead of from compose.
REWRITTEN = (
    "broker",
    "model_topic",
    "archive_topic",
    "control_topic",
    "status_topic",
    "data_topic",
    "scored_topic",
    "shadow_topic",
    "dead_letter_topic",
    "app_id",
    "http_host",
    "http_port",
    "data_dir",
)
#: Compose variables, as if the stack were started with `SWAP_EVERY=4 docker compose up`.
COMPOSE_VARIABLES = {"SWAP_EVERY": "4"}
IMAGE_WORKDIR = "/app"


def _in_container_fs(root: Path, path: str) -> Path:
    """A container path (``/tmp/models``) as a host path under this service's ``root``."""
    return root / path.lstrip("/")


def _host_argv(argv: list[str]) -> list[str]:
    """The host equivalent of a command run in the hotswap image."""
    if argv[0] == "hotswap":
        return [sys.executable, "-m", "service", *argv[1:]]
    if argv[0] in {"/bin/sh", "sh"} and argv[1].startswith(IMAGE_WORKDIR + "/"):
        script = REPO / argv[1].removeprefix(IMAGE_WORKDIR + "/")
        assert script.is_file(), f"{argv[1]} is not in the repository at {script}"
        return ["/bin/sh", str(script), *argv[2:]]
    raise AssertionError(f"don't know how to run {argv} on the host")


def _image_environment() -> dict[str, str]:
    """The HOTSWAP_* ENV of the image's final stage (the base of every container's env)."""
    env: dict[str, str] = {}
    for args in dockerfile_stages()[-1].args("ENV"):
        for item in args.split():
            key, _, value = item.partition("=")
            if key.startswith("HOTSWAP_"):
                env[key] = value
    return env


@dataclass
class HostService:
    """One compose service run as a host process in its own process group."""

    name: str
    compose: Mapping[str, Any]
    settings: Settings
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        compose_env = service_environment(self.compose, COMPOSE_VARIABLES)
        assert compose_env.get("HOTSWAP_BROKER") == f"kafka://{COMPOSE_BROKER}", self.name
        env = {**_image_environment(), **compose_env}
        for key, value in env.items():
            if value.startswith("/"):
                env[key] = str(_in_container_fs(self.root, value))
        own = settings_env(self.settings)
        for name in REWRITTEN:
            key = f"HOTSWAP_{name.upper()}"
            env[key] = own[key]
        leftovers = {k: v for k, v in env.items() if COMPOSE_BROKER in v}
        assert not leftovers, f"{self.name}: compose broker address left in {leftovers}"
        host = {k: v for k, v in os.environ.items() if not k.startswith("HOTSWAP_")}
        # `hotswap` inside the publisher's script: the console script next to this Python.
        host["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), host.get("PATH", "")])
        self.env = {**host, **env}

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    def start(self) -> HostService:
        argv = _host_argv(service_argv(self.compose))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def get(self, path: str) -> httpx.Response:
        return http_client().get(f"http://127.0.0.1:{self.settings.http_port}{path}", timeout=5)

    def history(self, model: str = "wine") -> list[dict[str, Any]]:
        response = self.get(f"/models/{model}/history")
        return list(response.json()) if response.status_code == 200 else []

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def assert_running(self) -> None:
        code = self.proc.returncode if self.proc is not None else None
        assert self.running(), f"{self.name} exited ({code}):\n{self.tail()}"

    def healthcheck(self, test: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the service's compose healthcheck (or ``test``) on the host."""
        kind, *argv = test or self.compose["healthcheck"]["test"]
        assert kind == "CMD", f"{self.name}: only exec-form healthchecks run on the host"

        def on_host(arg: str) -> str:
            if arg == "python":
                return sys.executable
            if arg.startswith(("/tmp/", IMAGE_WORKDIR + "/")):
                return str(_in_container_fs(self.root, arg))
            return arg

        host_argv = [on_host(arg) for arg in argv]
        return subprocess.run(
            host_argv, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=30
        )

    def wait_healthy(self, test: list[str] | None = None, timeout: float = 30) -> None:
        """Retry the healthcheck until it passes, as Docker does."""
        last: list[subprocess.CompletedProcess[str]] = []

        def passes() -> bool:
            last.append(self.healthcheck(test))
            return last[-1].returncode == 0

        try:
            wait_for(passes, timeout, f"{self.name}'s healthcheck", interval=0.5)
        except AssertionError as exc:
            output = (last[-1].stdout + last[-1].stderr) if last else ""
            raise AssertionError(f"{exc}\n{output}\n{self.tail()}") from None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the service's process group (as `docker compose stop`), SIGKILL if slow."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@contextmanager
def compose_stack(root: Path) -> Iterator[Callable[[str, Settings], HostService]]:
    """Start compose services by name; all of them are stopped, newest first, at the end."""
    started: list[HostService] = []
    services = compose_services()

    def start(name: str, settings: Settings) -> HostService:
        service = HostService(name, services[name], settings, root / name).start()
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in reversed(started):
            service.stop()
            if os.environ.get("HOTSWAP_TEST_SHOW_LOGS"):
                print(f"--- {service.name}\n{service.tail(200)}")


def _create_compose_topics(settings: Settings) -> None:
    """What the `topics` one-shot does, with this test's topic names."""
    compose_env = service_environment(compose_services()["worker-1"])
    renames = {
        compose_env[f"HOTSWAP_{name.upper()}"]: getattr(settings, name)
        for name in (
            "model_topic",
            "archive_topic",
            "control_topic",
            "status_topic",
            "data_topic",
            "scored_topic",
            "shadow_topic",
            "dead_letter_topic",
            "labels_topic",
        )
    }
    specs = compose_topic_specs()
    assert set(specs) == set(renames)

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            response = await admin.create_topics(
                [
                    NewTopic(
                        renames[s.name],
                        s.partitions,
                        s.replication_factor,
                        topic_configs=s.configs,
                    )
                    for s in specs.values()
                ]
            )
            failed = [(topic, code) for topic, code, *_ in response.topic_errors if code != 0]
            assert not failed, f"topic creation failed: {failed}"
            # A topic just created may not be described yet (KRaft propagates metadata
            # asynchronously): ask until its configs come back.
            deadline = time.monotonic() + 60
            entries: dict[str, str] = {}
            while "cleanup.policy" not in entries and time.monotonic() < deadline:
                described = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, settings.model_topic)]
                )
                entries = {
                    entry[0]: entry[1]
                    for response in described
                    for resource in response.resources
                    for entry in resource[4]
                }
                await asyncio.sleep(0.2)
            assert entries.get("cleanup.policy") == "compact", entries
        finally:
            await admin.close()

    asyncio.run(run())


def _corrupt_model(name: str) -> bytes:
    artifact = b"not an ONNX model"
    return orjson.dumps(
        {
            "name": name,
            "version": "1",
            "format": "onnx",
            "data": base64.b64encode(artifact).decode(),
            "sha256": hashlib.sha256(b"something else").hexdigest(),
        }
    )


def test_compose_services_serve_swap_and_feed_the_dashboard(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    assert dockerfile_stages()[-1].args("WORKDIR")[-1] == IMAGE_WORKDIR
    settings = make_settings()
    # worker-2: the same topics and consumer group, its own HTTP port and data dir.
    second = make_settings()
    assert (second.data_topic, second.app_id) == (settings.data_topic, settings.app_id)
    _create_compose_topics(settings)

    with compose_stack(tmp_path / "stack") as start:
        workers = [start("worker-1", settings), start("worker-2", second)]
        publisher = start("publisher", settings)
        (image_check,) = dockerfile_stages()[-1].args("HEALTHCHECK")
        image_test = ["CMD", *orjson.loads(image_check.split("CMD", 1)[1])]
        for worker in workers:

            def ready(worker: HostService = worker) -> bool:
                worker.assert_running()
                return worker.get("/ready").status_code == 200

            wait_for(ready, 90, f"{worker.name} ready")
            worker.wait_healthy()  # compose's healthcheck: /ready
            worker.wait_healthy(image_test)  # the image's HEALTHCHECK: /health

        def accepted(version: str) -> bool:
            publisher.assert_running()
            return all(
                any(h["version"] == version and h["status"] != "rejected" for h in w.history())
                for w in workers
            )

        wait_for(lambda: accepted("1"), 150, "the publisher's wine v1 on both workers")
        publisher.wait_healthy()
        # Its loop goes on: v2 (the forest) SWAP_EVERY seconds later.
        wait_for(lambda: accepted("2"), 90, "the publisher's wine v2 on both workers")
        for worker in workers:
            model = worker.get("/models/wine").json()
            assert int(model["version"]) >= 2, model

        producer = start("producer", settings)

        def all_scoring() -> bool:
            producer.assert_running()
            return all(_metric_sum([w], "hotswap_records_scored_total") > 0 for w in workers)

        wait_for(all_scoring, 60, "the producer's records scored by both workers")
        producer.wait_healthy()
        records = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 10)
        assert len(records) >= 10
        assert {r.json()["model"] for r in records} == {"wine"}

        # The dashboard also reads the dead-letter and rejection series: make one of each.
        send_raw(settings, settings.data_topic, [(b"bad-record", b"{not json")])
        send_raw(settings, settings.model_topic, [(b"broken", _corrupt_model("broken"))])
        wait_for(
            lambda: _metric_sum(workers, "hotswap_records_dead_lettered_total"),
            60,
            "a dead letter",
        )
        wait_for(
            lambda: all(_metric_sum([w], "hotswap_model_rejections_total") for w in workers),
            60,
            "the corrupt model rejected by both workers",
        )

        for service in (*workers, publisher, producer):
            service.assert_running()
        # What Prometheus would scrape: both workers' /metrics. The quality and drift series
        # come once the producer's labels have joined and drift has a window: wait for them.
        # kafka_* series (consumer lag) come from the kafka-exporter service, not the worker.
        wanted = {name for name in dashboard_metric_names() if not name.startswith("kafka_")}
        missing: list[str] = []

        def exported() -> bool:
            exposed = {
                base_metric_name(sample.name)
                for worker in workers
                for family in text_string_to_metric_families(worker.get("/metrics").text)
                for sample in family.samples
            }
            missing[:] = sorted(n for n in wanted if base_metric_name(n) not in exposed)
            return not missing

        try:
            wait_for(exported, 120, "every series the dashboard queries")
        except AssertionError:
            raise AssertionError(
                f"the dashboard queries series the workers do not export: {missing}"
            ) from None
        assert len(wanted) >= 8


def _metric_sum(services: list[HostService], sample: str) -> float:
    """Sum of every /metrics sample line starting with ``sample``, over ``services``."""
    total = 0.0
    for service in services:
        for line in service.get("/metrics").text.splitlines():
            if line.startswith(sample):
                total += float(line.rsplit(" ", 1)[1])
    return total
