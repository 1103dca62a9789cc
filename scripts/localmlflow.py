"""A real MLflow tracking server on 127.0.0.1, run as its own process (tests, local tries).

``mlflow server`` with a sqlite backend and a local artifact root, one worker
and no job runner (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: otherwise it
starts ~10 processes). Clients write artifacts straight to the artifact root,
so they must share it: point them at it with ``MLFLOW_TRACKING_URI`` only.
Webhooks to a loopback receiver need ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https``
and ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true`` (set here); the server caches
its webhook list for ``MLFLOW_WEBHOOK_CACHE_TTL`` seconds (1 here, 60 by default).
Needs ``hotswap[mlflow]``. Ready in 10-60 s.

Command line: ``python scripts/localmlflow.py --port 5000 --root DIR`` (until Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["LocalMlflow"]

logger = logging.getLogger(__name__)


class LocalMlflow:
    """``mlflow server`` on ``port`` with its database and artifacts under ``root``."""

    def __init__(self, port: int, root: Path) -> None:
        self.port, self.root = port, Path(root).absolute()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240) -> LocalMlflow:
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        }
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
        command += ["--default-artifact-root", str(self.root / "artifacts")]
        with (self.root / "mlflow.log").open("ab") as log:
            self._proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not answering on {self.uri} after {timeout}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, 15)  # its own session: uvicorn's workers go too
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, 9)
                self._proc.wait(10)
        self._proc = None

    def __enter__(self) -> LocalMlflow:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--root", type=Path, default=Path("mlflow-local"))
    options = parser.parse_args()
    with LocalMlflow(options.port, options.root) as server:
        print(f"MLflow at {server.uri}; export MLFLOW_TRACKING_URI={server.uri}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
