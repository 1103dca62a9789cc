"""SIGTERM ends a worker with exit code 0 within 10 s in every state (class 3).

Streaming at full rate, in the middle of a model build, during start-up and
replay, with the broker down, and with the broker wedged (SIGSTOP: it accepts
TCP connections and answers nothing). The broker is this module's own, since
some cases stop it.
"""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from scripts.harness import WorkerProcess, isolated_settings, publish_file, send_raw, wait_for
from scripts.localkafka import LocalKafka, free_port
from service.core.settings import Settings

pytestmark = pytest.mark.integration

# A stop takes HOTSWAP_STOP_TIMEOUT (5 s) at most plus the exit; the bound is the pod's
# terminationGracePeriodSeconds (30 s, deploy/kubernetes), after which it would be killed.
GRACE = 25.0


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    with LocalKafka(free_port(), tmp_path_factory.mktemp("stop-kafka")) as broker:
        yield broker


@pytest.fixture
def settings(own_kafka: LocalKafka, tmp_path: Path) -> Settings:
    return isolated_settings(own_kafka.bootstrap, tmp_path, "s", session_timeout=6.0)


def _stop_time(worker: WorkerProcess) -> tuple[float, int | None]:
    assert worker.proc is not None
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(30)
    except Exception:
        worker.proc.kill()
        code = None
    return time.monotonic() - started, code


def _check(seconds: float, code: int | None, worker: WorkerProcess) -> None:
    print(f"stopped in {seconds:.1f}s")
    assert code == 0, f"exit code {code}:\n{worker.tail(40)}"
    assert seconds < GRACE, f"took {seconds:.1f}s to stop:\n{worker.tail(40)}"


def _records(n: int) -> list[tuple[bytes | None, bytes | None]]:
    value = orjson.dumps({"model": "wine", "features": [13.0] * 13})
    return [(str(i).encode(), value) for i in range(n)]


def _ready_worker(settings: Settings, tmp_path: Path, trained: dict[str, Path]) -> WorkerProcess:
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    worker.wait_ready()
    return worker


def test_stop_while_streaming_at_full_rate(
    settings: Settings, tmp_path: Path, trained: dict[str, Path]
) -> None:
    worker = _ready_worker(settings, tmp_path, trained)
    send_raw(settings, settings.data_topic, _records(30_000))
    wait_for(lambda: "hotswap_records_scored_total" in worker.get("/metrics").text, 30, "scoring")
    seconds, code = _stop_time(worker)
    _check(seconds, code, worker)


def test_stop_during_start_up_and_replay(
    settings: Settings, tmp_path: Path, trained: dict[str, Path]
) -> None:
    for version in range(1, 6):
        publish_file(settings, trained["wine-forest"], "wine", str(version))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    wait_for(lambda: worker.get("/health").status_code == 200, 60, "HTTP up")
    seconds, code = _stop_time(worker)
    _check(seconds, code, worker)


class _Drip(http.server.BaseHTTPRequestHandler):
    asked = threading.Event()  # set once the worker's fetch has begun

    def do_GET(self) -> None:
        _Drip.asked.set()
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(600):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_stop_in_the_middle_of_a_model_build(
    settings: Settings, tmp_path: Path, trained: dict[str, Path]
) -> None:
    worker = _ready_worker(settings, tmp_path, trained)
    _Drip.asked.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        publish_file(
            settings,
            trained["wine-forest"],
            "wine",
            "2",
            store_dir=tmp_path / "store",
            base_url=f"http://127.0.0.1:{server.server_port}",
        )
        # the worker is now inside the fetch of version 2
        wait_for(_Drip.asked.is_set, 60, "the worker to fetch version 2")
        seconds, code = _stop_time(worker)
    finally:
        server.shutdown()
    _check(seconds, code, worker)


@pytest.mark.parametrize("how", ["down", "wedged"])
def test_stop_with_the_broker_away(
    how: str,
    own_kafka: LocalKafka,
    settings: Settings,
    tmp_path: Path,
    trained: dict[str, Path],
) -> None:
    worker = _ready_worker(settings, tmp_path, trained)
    # Enough records that the broker goes away while a batch is being delivered: the stop
    # then waits out stop_timeout for it, the worst case.
    send_raw(settings, settings.data_topic, _records(200_000))
    wait_for(lambda: "hotswap_records_scored_total" in worker.get("/metrics").text, 30, "scoring")
    pid = own_kafka.pid
    assert pid is not None
    if how == "down":
        own_kafka.stop()
    else:
        os.kill(pid, signal.SIGSTOP)
    try:
        seconds, code = _stop_time(worker)
    finally:
        if how == "down":
            own_kafka.start()
        else:
            os.kill(pid, signal.SIGCONT)
    _check(seconds, code, worker)
