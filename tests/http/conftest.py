"""HTTP fixtures: a string-label model, and the API served by real uvicorn in a subprocess."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from scripts.harness import http_client
from service.core.messages import ModelMessage
from tests.models import WINE_SAMPLE_INDEX, BuiltModel, sha256_of

ROOT = Path(__file__).resolve().parents[2]


def _built(estimator: Any, wine: Any) -> BuiltModel:
    """The fitted wine ``estimator`` as ONNX, with its sample rows and labels."""
    from service.core.convert import sklearn_to_onnx

    rows = wine.data[WINE_SAMPLE_INDEX].astype(np.float32)
    converted = sklearn_to_onnx(estimator, rows)
    assert converted.classes is not None
    assert converted.sample_labels is not None
    return BuiltModel(
        converted.onnx,
        list(wine.feature_names),
        converted.classes,
        rows.tolist(),
        converted.sample_labels,
    )


@pytest.fixture(scope="session")
def text_model() -> BuiltModel:
    """Wine with string classes, so the label output is a BYTES tensor."""
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wine = load_wine()
    names = np.array(["barolo", "grignolino", "barbera"])[wine.target]
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    estimator.fit(wine.data, names)
    return _built(estimator, wine)


@pytest.fixture(scope="session")
def deep_model() -> BuiltModel:
    """A wide MLP on wine: ~1 s of ONNX Runtime work for 100,000 rows (a slow request)."""
    from sklearn.datasets import load_wine
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wine = load_wine()
    mlp = MLPClassifier((512, 512), max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged: its speed is what matters here
        estimator = make_pipeline(StandardScaler(), mlp).fit(wine.data, wine.target)
    return _built(estimator, wine)


@dataclass
class Server:
    """A uvicorn process serving ``create_api`` over a registry of the given models."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def status(self, field: str) -> int:
        """A ``VmRSS``/``VmHWM`` figure of the server process, in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ServerFactory = Callable[..., Server]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start ``tests.http.serve`` (real uvicorn over TCP) with the given model messages."""
    started: list[Server] = []
    tmp_path = tmp_path_factory.mktemp("serve")

    def start(*messages: ModelMessage, max_request_bytes: int | None = None) -> Server:
        paths = []
        for i, message in enumerate(messages):
            path = tmp_path / f"model-{len(started)}-{i}.json"
            path.write_text(message.model_dump_json())
            paths.append(str(path))
        port = _free_port()
        args = [sys.executable, "-m", "tests.http.serve", "--port", str(port)]
        if max_request_bytes is not None:
            args += ["--max-request-bytes", str(max_request_bytes)]
        args += paths
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
        process = subprocess.Popen(args, cwd=ROOT, env=env)
        server = Server(f"http://127.0.0.1:{port}", process)
        started.append(server)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, "the server exited during start-up"
            try:
                live = http_client().get(f"{server.url}/v2/health/live", timeout=1)
                if live.status_code == 200:
                    return server
            except httpx.TransportError:
                time.sleep(0.1)
        raise TimeoutError("the server did not answer within 180 s")

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _message(model: BuiltModel, name: str, version: str) -> ModelMessage:
    return ModelMessage(
        name=name,
        version=version,
        description=f"{name} v{version}",
        data=base64.b64encode(model.onnx).decode(),
        sha256=sha256_of(model.onnx),
        metadata=model.metadata(),
    )


@pytest.fixture(scope="module")
def deep(deep_model: BuiltModel) -> ModelMessage:
    return _message(deep_model, "deep", "1")


@pytest.fixture(scope="module")
def wine_and_text(wine_model: BuiltModel, text_model: BuiltModel) -> tuple[ModelMessage, ...]:
    """wine version 3 (INT64 labels) and cellar version 7 (BYTES labels)."""
    return _message(wine_model, "wine", "3"), _message(text_model, "cellar", "7")
