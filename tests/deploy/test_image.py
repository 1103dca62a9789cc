"""The hotswap image, built and run in a real Docker engine (``make test-image``).

Why: test_deploy_files.py reads the Dockerfile and test_deploy.py runs its commands on the
host, but neither shows that the image builds and that the service works inside it. Here
the image is built from the Dockerfile (scripts/docker_build.sh: python:3.11-slim when a
registry answers, else a Debian base made by debootstrap; Python packages from a
wheelhouse), two workers run from it against a real local broker, a model is published
and records are streamed with the image's own tools, and then everything a deployment
relies on is checked: /ready, the scored topic, the non-root user, the HEALTHCHECK, and a
clean exit (code 0) within the 10 s grace period of ``docker stop``.

Every container uses the host's network and the broker listens on 127.0.0.1, so no test
traffic leaves loopback. Marked ``container``: deselected by default (pyproject's addopts)
and run by ``make test-image``; with no engine the test fails, it does not skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.harness import ConsumedRecord, consume, wait_for
from scripts.image_docker import (
    LABEL,
    build_image,
    container_uids,
    docker,
    docker_unavailable,
    http_status,
    inspect,
    remove_labelled,
    stop_timed,
)
from scripts.localkafka import LocalKafka, free_port
from service.core.settings import Settings

pytestmark = [pytest.mark.container, pytest.mark.timeout(1500)]

#: The service's promise: SIGTERM -> exit 0 within this many seconds.
GRACE_SECONDS = 10
#: The uid the Dockerfile's USER runs as.
HOTSWAP_UID = 10001
RECORDS = 300


@pytest.fixture(scope="module")
def image() -> str:
    """The project's image, built now from the working tree (layers cached between runs)."""
    reason = docker_unavailable()
    if reason is not None:
        pytest.fail(f"no container engine: {reason}")
    return build_image("hotswap")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    with LocalKafka(free_port(), tmp_path / "kafka") as kafka:
        yield kafka


@pytest.fixture
def run_id() -> Iterator[str]:
    """A label value for this test's containers; all of them are removed afterwards."""
    value = uuid.uuid4().hex[:10]
    yield value
    remove_labelled(value)


def _env(broker: LocalKafka, run_id: str) -> dict[str, str]:
    """One broker, topic set and consumer group for every container of this test."""
    return {
        "HOTSWAP_BROKER": f"kafka://{broker.bootstrap}",
        "HOTSWAP_MODEL_TOPIC": f"models-{run_id}",
        "HOTSWAP_ARCHIVE_TOPIC": f"models.archive-{run_id}",
        "HOTSWAP_DATA_TOPIC": f"records-{run_id}",
        "HOTSWAP_SCORED_TOPIC": f"scored-{run_id}",
        "HOTSWAP_DEAD_LETTER_TOPIC": f"records.dlq-{run_id}",
        "HOTSWAP_APP_ID": f"hotswap-{run_id}",
        "HOTSWAP_DATA_PARTITIONS": "4",
        "HOTSWAP_HTTP_HOST": "127.0.0.1",
    }


def _run_args(env: dict[str, str], run_id: str) -> list[str]:
    args = ["--network", "host", "--label", f"{LABEL}={run_id}"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return args


def _tool(image: str, env: dict[str, str], run_id: str, script: str) -> str:
    """Run a one-off shell ``script`` in the image (as its user) and return its output."""
    result = docker(
        "run", "--rm", *_run_args(env, run_id), "--entrypoint", "/bin/sh", image, "-c", script,
        timeout=300,
    )  # fmt: skip
    return result.stdout + result.stderr


def _logs(name: str) -> str:
    result = docker("logs", "--tail", "40", name, check=False)
    return result.stdout + result.stderr


def _scored_ids(records: list[ConsumedRecord], prefix: str) -> set[str]:
    return {
        str(r.json()["id"])
        for r in records
        if r.value is not None and str(r.json().get("id", "")).startswith(prefix)
    }


def test_image_serves_two_workers_on_a_real_broker(
    image: str, broker: LocalKafka, run_id: str
) -> None:
    env = _env(broker, run_id)
    ports = [free_port(), free_port()]
    names = [f"hotswap-test-{run_id}-worker-{n}" for n in (1, 2)]
    for name, port in zip(names, ports):
        # As an orchestrator runs it: the image's ENTRYPOINT/CMD, no --init, no user flag.
        docker(
            "run", "-d", "--name", name, *_run_args(env, run_id),
            "-e", f"HOTSWAP_HTTP_PORT={port}", "-e", f"HOTSWAP_GRPC_PORT={free_port()}", image,
        )  # fmt: skip
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    # Ready: broker reachable and the (empty) model topic replayed, on both.
    for name, url in zip(names, urls):

        def ready(name: str = name, url: str = url) -> bool:
            state = inspect(name)["State"]
            assert state["Running"], f"{name} exited {state['ExitCode']}:\n{_logs(name)}"
            return http_status(url + "/ready") == 200

        wait_for(ready, 120, f"{name} /ready", interval=0.5)

    # The non-root user, as the kernel sees the main process (not just what the image says).
    for name in names:
        assert inspect(name)["Config"]["User"] == "hotswap"
        assert container_uids(name) == {HOTSWAP_UID}, f"{name} runs as {container_uids(name)}"

    # Publish with the image's own tools, as the compose publisher does.
    out = _tool(
        image, env, run_id,
        "set -e; hotswap train --out /tmp/models --kind wine-logreg; "
        "hotswap publish /tmp/models/wine-logreg.joblib --name wine --version 1",
    )  # fmt: skip
    for url in urls:

        def serving(url: str = url) -> bool:
            response = httpx.get(url + "/models/wine", timeout=3)
            return response.status_code == 200 and str(response.json()["version"]) == "1"

        wait_for(serving, 60, f"{url} serving wine v1 (publish said: {out[-500:]})", 0.2)

    # Stream records with the image's producer; every one comes back scored by v1.
    prefix = f"img{run_id}"
    _tool(image, env, run_id, f"hotswap produce --count {RECORDS} --id-prefix {prefix}")
    settings = Settings(broker=env["HOTSWAP_BROKER"], scored_topic=env["HOTSWAP_SCORED_TOPIC"])
    records = consume(
        settings,
        env["HOTSWAP_SCORED_TOPIC"],
        until=lambda rs: len(_scored_ids(rs, prefix)) >= RECORDS,
        timeout=90,
    )
    assert len(_scored_ids(records, prefix)) == RECORDS, [_logs(n) for n in names]
    for record in records:
        body = record.json()
        assert (body["model"], str(body["version"])) == ("wine", "1"), body
        assert body["label"] in {0, 1, 2}, body
        assert record.headers.get("hotswap-version") == b"1", record.headers

    # Both workers took part: the data topic's partitions are split across the group.
    for url in urls:
        scored = sum(
            float(line.rsplit(" ", 1)[1])
            for line in httpx.get(url + "/metrics", timeout=3).text.splitlines()
            if line.startswith("hotswap_records_scored_total{")
        )
        assert scored > 0, f"{url} scored nothing: the group did not split the partitions"

    # The image's HEALTHCHECK, run by the engine on its own schedule.
    for name in names:
        check = inspect(name)["Config"]["Healthcheck"]
        assert "/health" in " ".join(check["Test"]), check

        def healthy(name: str = name) -> bool:
            health = inspect(name)["State"]["Health"]
            assert health["Status"] != "unhealthy", health["Log"][-3:]
            return bool(health["Status"] == "healthy")

        wait_for(healthy, 60, f"{name} healthy", interval=1)

    # SIGTERM (docker stop): both exit 0 well inside the grace period.
    for stopped in stop_timed(names, GRACE_SECONDS):
        print(f"{stopped.name}: exit {stopped.exit_code} {stopped.seconds:.1f}s after SIGTERM")
        logs = _logs(stopped.name)
        assert stopped.exit_code == 0, f"{stopped}\n{logs}"
        assert stopped.seconds < GRACE_SECONDS, f"{stopped}\n{logs}"
        assert not stopped.oom_killed, stopped
