"""Integration fixtures: one real Kafka broker per session, unique topics per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from scripts.harness import WorkerProcess, isolated_settings, publish_file
from scripts.localkafka import LocalKafka, fetch, free_port
from service.core.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real single-node KRaft broker started from Kafka's jars by our own script."""
    fetch()
    with LocalKafka(free_port(), tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of the test module's own, for tests that stop and restart it."""
    with LocalKafka(free_port(), tmp_path_factory.mktemp("own-kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A second broker with a SASL_SSL listener (SCRAM-SHA-512, TLS) and ACLs on.

    Started only when a test asks for it (tests/kafka/test_secured.py): the rest of
    the suite keeps the plain, faster broker above.
    """
    fetch()
    data = tmp_path_factory.mktemp("secure-kafka")
    with LocalKafka(free_port(), data, secure_port=free_port()) as broker:
        yield broker


@pytest.fixture
def make_settings(kafka: LocalKafka, tmp_path: Path) -> Callable[..., Settings]:
    """Settings with this test's own topics and consumer group (shared by its workers)."""
    test_id = uuid.uuid4().hex[:10]

    def make(**overrides: object) -> Settings:
        return isolated_settings(
            kafka.bootstrap, tmp_path, "t", tag=test_id, log_level="INFO", **overrides
        )

    return make


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def workers(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[Settings], WorkerProcess]]:
    """Start worker processes; every one is stopped (or killed) when the test ends.

    A failed test prints the end of each worker's log and, for a worker still running,
    the stacks of its threads and asyncio tasks (shown with the failure, as the
    teardown's output), so a failure in CI says what the worker was doing or waiting on."""
    started: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log").start()
        started.append(worker)
        return worker

    yield start
    report = getattr(request.node, "report_call", None)
    failed = report is not None and report.failed
    for worker in started:
        stacks = worker.stacks() if failed else ""  # where a silent worker waits
        worker.stop(timeout=20)
        if failed or os.environ.get("HOTSWAP_TEST_SHOW_LOGS"):
            print(f"--- the last lines of {worker.log_path.name} ---")
            print(worker.tail(200))
        if stacks:
            print(f"--- {worker.log_path.name}: its threads' and tasks' stacks at the failure ---")
            print(stacks)


WineWorker = Callable[..., tuple[Settings, WorkerProcess]]


@pytest.fixture
def wine_worker(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> WineWorker:
    """Publish wine v1 (logistic regression), start a worker on it and wait until ready."""

    def start(**overrides: object) -> tuple[Settings, WorkerProcess]:
        settings = make_settings(**overrides)
        publish_file(settings, trained["wine-logreg"], "wine", "1")
        worker = workers(settings)
        worker.wait_ready()
        return settings, worker

    return start


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example models trained once per session (joblib + sidecar metadata)."""
    from models.train import KINDS, train_model

    out = tmp_path_factory.mktemp("models")
    return {kind: train_model(kind, out) for kind in KINDS}
