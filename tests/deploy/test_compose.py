"""The shipped docker-compose.yml, up for real in Docker (``make test-compose``).

Why: the design's first use is ``docker compose up``. Here Debian's ``docker-compose``
(1.29, compose v1) runs the project's own docker-compose.yml plus
compose/override.yml, which swaps only the images no registry here serves (Kafka from its
Maven jars on Debian's JRE, Prometheus from Debian's package) and puts every container on
host networking, so test traffic stays on loopback. Then the test acts as a user: the
compose publisher publishes a model, the compose producer streams records, both workers
answer over HTTP, Prometheus scrapes both (asked through its API, with the dashboard's own
queries), the publisher's second version reaches both workers, and ``docker-compose down``
leaves no container, network or volume behind. Grafana is not run (no registry serves it):
its provisioning is parsed and its queries run on the live Prometheus instead. The
kafka-exporter service cannot be built here (see override.yml), so it is not started.

The checks that the override changes nothing else are plain tests (no engine needed) and
run with the default suite; the stack itself is marked ``container``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scripts.harness import consume, wait_for
from scripts.image_docker import REPO, build_image, docker, docker_unavailable, inspect
from service.core.settings import Settings
from tests.deploy.test_deploy_files import (
    GRAFANA,
    PROMETHEUS,
    compose_services,
    dashboard_queries,
    promql_metric_names,
    service_environment,
)

HERE = Path(__file__).resolve().parent / "compose"
OVERRIDE = HERE / "override.yml"
TEST_PROMETHEUS = HERE / "prometheus.yml"
#: The hotswap services' images are built from the Dockerfile; these are swapped.
SWAPPED_IMAGES = {
    "kafka": "apache/kafka",
    "topics": "apache/kafka",
    "prometheus": "prom/prometheus",
}
NOT_RUN = {"grafana", "kafka-exporter"}
WORKER_PORTS = {"worker-1": 8001, "worker-2": 8002}
GRPC_PORTS = {"worker-1": 8081, "worker-2": 8082}  # host networking: one port each
LOOPBACK_PORTS = (9092, 9093, 9090, *WORKER_PORTS.values(), *GRPC_PORTS.values())
PROMETHEUS_URL = "http://127.0.0.1:9090"
SWAP_EVERY = 40


def _override() -> dict[str, Any]:
    data = yaml.safe_load(OVERRIDE.read_text())
    assert isinstance(data, dict)
    return data


# --- the override changes only what cannot work here (no engine needed) --------------------


def test_override_puts_every_service_on_host_networking() -> None:
    services = _override()["services"]
    assert set(services) == set(compose_services()), "every shipped service, no other"
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert "kafka:127.0.0.1" in service["extra_hosts"], name


def test_override_swaps_only_unservable_images_and_loopback_settings() -> None:
    shipped = compose_services()
    allowed = {"network_mode", "extra_hosts", "image", "environment", "volumes"}
    for name, service in _override()["services"].items():
        assert set(service) <= allowed, f"{name}: {set(service) - allowed}"
        if "image" in service:
            assert shipped[name]["image"].split(":")[0] == SWAPPED_IMAGES[name], name
            assert shipped[name]["image"].split(":")[1] in service["image"] or name == "prometheus"
        env = service_environment(service)
        if name == "kafka":
            assert set(env) == {"KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"}
            assert all("127.0.0.1" in value for value in env.values())
        elif name in WORKER_PORTS:
            assert env == {
                "HOTSWAP_HTTP_HOST": "127.0.0.1",
                "HOTSWAP_HTTP_PORT": str(WORKER_PORTS[name]),
                "HOTSWAP_GRPC_PORT": str(GRPC_PORTS[name]),
            }
            assert f"{WORKER_PORTS[name]}:8000" in shipped[name]["ports"], "the shipped port"
            assert f"{GRPC_PORTS[name]}:8081" in shipped[name]["ports"], "the shipped port"
        else:
            assert not env, name
        if "volumes" in service:
            assert name == "prometheus"
            assert service["volumes"] == [
                "./tests/deploy/compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
                "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro",
            ]


def test_test_prometheus_config_differs_only_in_targets() -> None:
    shipped = yaml.safe_load(PROMETHEUS.read_text())
    test = yaml.safe_load(TEST_PROMETHEUS.read_text())
    expected_jobs = [
        job for job in shipped["scrape_configs"] if job["job_name"] != "kafka-exporter"
    ]
    for job in expected_jobs:
        for static in job.get("static_configs", []):
            static["targets"] = [
                f"127.0.0.1:{WORKER_PORTS[t.split(':')[0]]}"
                if t.split(":")[0] in WORKER_PORTS
                else t
                for t in static["targets"]
            ]
    assert test == {**shipped, "scrape_configs": expected_jobs}


# --- the stack, up for real ---------------------------------------------------------------------


class Compose:
    """``docker-compose -p PROJECT`` on docker-compose.yml + override.yml, merged by compose.

    Compose v1 cannot run the two files as they are: its Docker client refuses published
    ``ports`` on a host-network container (the engine itself would only warn and drop
    them), and a v1 override cannot delete list entries. So compose merges the files
    (``docker-compose config``, which also resolves paths and ``${SWAP_EVERY}``) and only
    the ``ports`` of host-network services are dropped from the result; nothing else is
    touched.
    """

    def __init__(self, project: str, variables: dict[str, str], workdir: Path) -> None:
        self.project = project
        self.env = {**os.environ, **variables}
        self.file = REPO / "docker-compose.yml"
        merged = yaml.safe_load(self.run("-f", str(OVERRIDE), "config", check=True).stdout)
        merged.pop("version", None)  # `config` stamps 3.9, whose schema lacks v1.29's extras
        for service in merged["services"].values():
            if service.get("network_mode") == "host":
                service.pop("ports", None)
        self.file = workdir / "docker-compose.merged.yml"
        self.file.write_text(yaml.safe_dump(merged, sort_keys=False))

    def run(
        self, *args: str, timeout: float = 300, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        argv = ["docker-compose", "-p", self.project, "--project-directory", str(REPO)]
        result = subprocess.run(
            [*argv, "-f", str(self.file), *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, f"{' '.join(args)}: {result.stderr[-3000:]}"
        return result

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr[-3000:]}\n{self.logs()}"
        return result

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "25", timeout=60).stdout

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        return {
            kind: docker(*command, "--filter", label, check=False).stdout.split()
            for kind, command in {
                "containers": ("ps", "-aq"),
                "networks": ("network", "ls", "-q"),
                "volumes": ("volume", "ls", "-q"),
            }.items()
        }


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    reason = docker_unavailable()
    if reason is not None:
        pytest.fail(f"no container engine: {reason}")
    for kind in ("hotswap", "kafka", "prometheus"):
        build_image(kind)
    busy = [port for port in LOOPBACK_PORTS if _port_busy(port)]
    assert not busy, f"127.0.0.1 ports {busy} are taken; the stack needs them (stop the holder)"
    project = f"hotswaptest{uuid.uuid4().hex[:8]}"
    stack = Compose(project, {"SWAP_EVERY": str(SWAP_EVERY)}, tmp_path_factory.mktemp("compose"))
    try:
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", "-t", "10")  # also after a failure


def _port_busy(port: int) -> bool:
    """Something answers on 127.0.0.1:``port`` (the stack's fixed ports must be free)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _version(port: int) -> str | None:
    response = httpx.get(f"http://127.0.0.1:{port}/models/wine", timeout=3)
    return str(response.json()["version"]) if response.status_code == 200 else None


def _serves(port: int, version: str) -> bool:
    return _version(port) == version


def _prometheus(query: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{PROMETHEUS_URL}/api/v1/query", params={"query": query}, timeout=5).json()
    assert body["status"] == "success", (query, body)
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


@pytest.mark.container
@pytest.mark.timeout(1800)
def test_compose_stack_as_a_user(compose: Compose) -> None:
    hotswap = [s for s in compose_services() if s not in NOT_RUN | {"prometheus"}]
    compose("up", "-d", *hotswap, timeout=900)  # waits on the shipped healthchecks/conditions
    compose("up", "-d", "--no-deps", "prometheus")
    assert compose("ps", "-q", "grafana", "kafka-exporter").stdout.strip() == ""

    # Both workers: ready, and serving the publisher's first version (or already its second).
    for name, port in WORKER_PORTS.items():
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=3).status_code == 200, name
        wait_for(partial(_version, port), 120, f"{name} serving wine", interval=0.5)

    # The producer's records come back scored on the scored topic, from both workers.
    env = service_environment(compose_services()["worker-1"])
    settings = Settings(broker="kafka://127.0.0.1:9092", scored_topic=env["HOTSWAP_SCORED_TOPIC"])
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 200, timeout=90)
    assert len(scored) >= 200, compose.logs()
    assert {r.json()["model"] for r in scored} == {"wine"}

    # Prometheus scrapes both workers (its targets API and `up`), and has their counters.
    def both_up() -> bool:
        up = _prometheus('up{job="hotswap"}')
        return len(up) == 2 and all(s["value"][1] == "1" for s in up)

    wait_for(both_up, 90, "Prometheus scraping both workers", interval=1)
    targets = httpx.get(f"{PROMETHEUS_URL}/api/v1/targets", timeout=5).json()["data"]
    hotswap_targets = [t for t in targets["activeTargets"] if t["labels"]["job"] == "hotswap"]
    assert sorted(t["labels"]["instance"] for t in hotswap_targets) == [
        f"127.0.0.1:{port}" for port in sorted(WORKER_PORTS.values())
    ]
    assert all(t["health"] == "up" for t in hotswap_targets), hotswap_targets

    def both_scoring() -> bool:
        series = _prometheus("sum by (instance) (hotswap_records_scored_total)")
        return len(series) == 2 and all(float(s["value"][1]) > 0 for s in series)

    wait_for(both_scoring, 60, "both workers' scored counters in Prometheus", interval=1)

    # Grafana is not run: its datasource points at the prometheus service, whose port the
    # live Prometheus answers on, and every worker query on the dashboard evaluates there.
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    for expr in dashboard_queries():
        if any(name.startswith("kafka_") for name in promql_metric_names(expr)):
            continue  # kafka-exporter's, not run here
        _prometheus(expr.replace("$__rate_interval", "1m").replace("$__interval", "1m"))
    # The throughput panel's rate() needs two scrapes of the counters: wait for them.
    throughput = "sum(rate(hotswap_records_scored_total[1m]))"
    wait_for(partial(_prometheus, throughput), 60, "a throughput in Prometheus", interval=1)

    # The publisher's next version (every SWAP_EVERY s) reaches both workers.
    for name, port in WORKER_PORTS.items():
        wait_for(partial(_serves, port, "2"), SWAP_EVERY * 3, f"{name} on v2", interval=1)
        history = httpx.get(f"http://127.0.0.1:{port}/models/wine/history", timeout=3).json()
        accepted = {str(v["version"]) for v in history if v["status"] != "rejected"}
        assert {"1", "2"} <= accepted, history
    versions = consume(
        settings,
        settings.scored_topic,
        until=lambda rs: any(r.headers.get("hotswap-version") == b"2" for r in rs),
        timeout=60,
    )
    assert {r.headers.get("hotswap-version") for r in versions} >= {b"1", b"2"}

    # docker-compose stop: the workers exit 0 within the 10 s grace period ...
    compose("stop", "-t", "10", timeout=120)
    for name in WORKER_PORTS:
        (container,) = compose("ps", "-q", name).stdout.split()
        state = inspect(container)["State"]
        assert state["ExitCode"] == 0, f"{name} exited {state['ExitCode']}\n{compose.logs()}"
    # ... and down leaves nothing behind.
    compose("down", "-v", "--remove-orphans", "-t", "10", timeout=300)
    assert compose.leftovers() == {"containers": [], "networks": [], "volumes": []}
