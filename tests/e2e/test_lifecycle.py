"""Model lifecycle on a real broker: rollback, by-reference, signing, and OIP v2 clients."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as triton

from scripts.harness import WorkerProcess, publish_file, run_cli, wait_for
from service.core.settings import Settings
from tests.brokers import WineWorker

pytestmark = pytest.mark.integration

ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


def test_rollback_after_restart_and_by_reference_publish(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
    tmp_path: Path,
) -> None:
    store = tmp_path / "artifacts"
    settings = make_settings(model_roots=str(store))  # by-reference artifacts live there
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    out = run_cli(
        settings, "publish", str(trained["wine-forest"]), "--name", "wine", "--version", "2",
        "--by-reference", str(store),
    ).stdout  # fmt: skip
    assert "file://" in out
    first = workers(settings)
    first.wait_ready()
    assert first.model_version("wine") == "2"
    assert first.stop() == 0

    worker = workers(settings)  # a restart: the archive, not the worker, remembers v1
    worker.wait_ready()
    done = run_cli(settings, "rollback", "wine", "--to", "1")
    assert "version 1 is current again" in done.stdout
    wait_for(lambda: worker.model_version("wine") == "1", 60, "rollback to v1")
    statuses = [(h["version"], h["status"]) for h in worker.get("/models/wine/history").json()]
    assert statuses[-1] == ("1", "accepted")

    url = worker.url
    back = run_cli(settings, "rollback", "wine", "--url", url)  # "the previous accepted": v2
    assert "version 2 is current again" in back.stdout
    wait_for(lambda: worker.model_version("wine") == "2", 60, "rollback to v2 (by reference)")
    missing = run_cli(settings, "rollback", "wine", "--to", "9", check=False)
    assert missing.returncode == 1
    assert "not in the archive" in missing.stderr


def test_signed_models_only_when_a_verify_key_is_set(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
    tmp_path: Path,
) -> None:
    key = tmp_path / "publisher.key"
    run_cli(make_settings(), "keygen", str(key))
    settings = make_settings(verify_key=str(key) + ".pub")
    model = trained["wine-logreg"]  # published as `hotswap publish` would, in this process
    publish_file(settings, model, "wine", "1", signing_key=key)
    worker = workers(settings)
    worker.wait_ready()
    assert worker.model_version("wine") == "1"

    publish_file(settings, model, "wine", "2")  # unsigned
    other = tmp_path / "intruder.key"
    run_cli(settings, "keygen", str(other))
    publish_file(settings, model, "wine", "3", signing_key=other)

    def rejected() -> list[str] | None:
        history = worker.get("/models/wine/history").json()
        reasons = [h["reason"] for h in history if h["status"] == "rejected"]
        return reasons if len(reasons) == 2 else None

    assert wait_for(rejected, 60, "two rejections") == ["signature_invalid", "signature_invalid"]
    assert worker.model_version("wine") == "1"
    log = worker.log_path.read_text()
    assert "BEGIN" not in log, "key material must never be logged"


def test_official_triton_clients_score_with_the_serving_model(
    wine_worker: WineWorker,
    trained: dict[str, Path],
) -> None:
    """tritonclient.http on HOTSWAP_HTTP_PORT and tritonclient.grpc on HOTSWAP_GRPC_PORT."""
    settings, worker = wine_worker()
    client = triton.InferenceServerClient(url=f"127.0.0.1:{settings.http_port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("wine")
    meta = client.get_model_metadata("wine")
    assert meta["versions"] == ["1"]

    batch = np.asarray([ROW, ROW], dtype=np.float32)
    tensor = triton.InferInput("X", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=False)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=False),
        triton.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = client.infer("wine", [tensor], outputs=outputs)
    labels = result.as_numpy("label")
    probabilities = result.as_numpy("probabilities")
    assert labels is not None
    assert probabilities is not None
    assert labels.tolist() == [0, 0]
    assert probabilities.shape == (2, 3)

    rpc = grpcclient.InferenceServerClient(f"127.0.0.1:{settings.grpc_port}")
    assert rpc.is_server_ready()
    assert rpc.is_model_ready("wine")
    raw = grpcclient.InferInput("X", list(batch.shape), "FP32")
    raw.set_data_from_numpy(batch)  # its defaults: raw_input_contents, every output
    over_grpc = rpc.infer("wine", [raw])
    assert over_grpc.get_response().model_version == "1"
    assert over_grpc.as_numpy("label").tolist() == [0, 0]
    np.testing.assert_allclose(over_grpc.as_numpy("probabilities"), probabilities, atol=1e-6)
    assert worker.metric('hotswap_grpc_inference_rows_total{model="wine",version="1"}') == 2

    publish_file(settings, trained["wine-forest"], "wine", "2")
    wait_for(lambda: worker.model_version("wine") == "2", 60, "v2")
    assert client.infer("wine", [tensor], outputs=outputs).get_response()["model_version"] == "2"
    assert rpc.infer("wine", [raw]).get_response().model_version == "2"
    rpc.close()
    # SIGUSR1 writes where every thread and task is to the log (how a failed test shows
    # what a silent worker waits on), and the worker serves on.
    stacks = worker.stacks(timeout=60)  # a bound for a loaded machine, not a budget
    assert "TASKS" in stacks, stacks[-2000:]
    assert "data_feed.py" in stacks, stacks[-2000:]
    assert client.infer("wine", [tensor], outputs=outputs).get_response()["model_version"] == "2"
    assert worker.stop() == 0  # the gRPC server stops with the worker, cleanly


def test_publish_by_reference_over_http(
    wine_worker: WineWorker, trained: dict[str, Path], tmp_path: Path
) -> None:
    store = tmp_path / "served"
    store.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(store))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings, worker = wine_worker()
        url = f"http://127.0.0.1:{server.server_address[1]}/models"
        (store / "models").mkdir()
        out = run_cli(
            settings, "publish", str(trained["wine-forest"]), "--name", "wine", "--version", "2",
            "--by-reference", str(store / "models"), "--base-url", url,
        ).stdout  # fmt: skip
        assert url in out
        wait_for(lambda: worker.model_version("wine") == "2", 60, "v2 fetched over HTTP")
    finally:
        server.shutdown()
