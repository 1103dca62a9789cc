"""MLflow fixtures: one real ``mlflow server`` process per session, two registered versions.

Only the MLflow tests ask for them, so no other test pays the server's start
(10-60 s) or MLflow's import. ``wine_registry`` registers two versions of one
model (logistic regressions of different strength, fitted on the wine data
as a pandas frame, so the signature names the features) with a tag each;
tests point their own alias at them.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.harness import REPO, settings_env
from scripts.localkafka import free_port
from scripts.localmlflow import LocalMlflow
from service.core.settings import Settings

__all__ = ["Follow", "WineRegistry", "mlflow_server", "wine_registry"]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlflow]:
    with LocalMlflow(free_port(), tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@dataclass
class WineRegistry:
    """A registered model with versions "1" and "2", and the frame they were fitted on."""

    uri: str
    name: str
    features: Any  # pandas DataFrame
    run_ids: dict[str, str]

    def set_alias(self, alias: str, version: str) -> None:
        from mlflow import MlflowClient

        MlflowClient(self.uri).set_registered_model_alias(self.name, alias, version)

    def predict(self, version: str, rows: Any) -> list[int]:
        import mlflow

        model = mlflow.pyfunc.load_model(f"models:/{self.name}/{version}")
        return [int(v) for v in model.predict(rows)]


@pytest.fixture(scope="session")
def wine_registry(mlflow_server: LocalMlflow) -> WineRegistry:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlflow.set_tracking_uri(mlflow_server.uri)
    frame, target = load_wine(return_X_y=True, as_frame=True)
    name = f"wine-{uuid.uuid4().hex[:8]}"
    run_ids: dict[str, str] = {}
    for version, strength in (("1", 1.0), ("2", 0.001)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=2000))
        model.fit(frame, target)
        signature = mlflow.models.infer_signature(frame, model.predict(frame))
        with mlflow.start_run() as run:
            mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                input_example=frame.iloc[:4],
                registered_model_name=name,
                pip_requirements=["scikit-learn"],  # no inference: it starts a subprocess
                await_registration_for=0,
            )
        run_ids[version] = run.info.run_id
        MlflowClient().set_model_version_tag(name, version, "strength", str(strength))
    return WineRegistry(mlflow_server.uri, name, frame, run_ids)


class Follow:
    """A ``hotswap follow`` process; its stdout and stderr in files the test can wait on."""

    def __init__(self, settings: Settings, tracking: str, log: Path, *args: str) -> None:
        env = {**settings_env(settings), "MLFLOW_TRACKING_URI": tracking}
        self.out, self.err = log.with_suffix(".out"), log.with_suffix(".err")
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "follow", *args],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=err,
            )

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def wait_line(self, part: str, timeout: float = 120, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines()[after:]:
                if part in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"no line with {part!r} from follow (exit {self.proc.poll()}):\n"
            f"{self.out.read_text()}\n{self.err.read_text()[-3000:]}"
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)
