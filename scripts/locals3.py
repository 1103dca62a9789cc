"""A real S3 endpoint on 127.0.0.1: moto's standalone server, run as its own process.

No MinIO or SeaweedFS package is installable here; ``moto[server]`` (a dev
dependency) serves the S3 API over HTTP the way a store would: buckets,
objects, presigned URLs, S3's XML errors. The tests, and anyone trying
``s3://`` locations locally, point boto3 at it with ``AWS_ENDPOINT_URL``::

    with LocalS3(free_port(), tmp_path / "s3.log") as s3:
        os.environ.update(s3.env())   # AWS_ENDPOINT_URL and dummy credentials
        ...

Command line: ``python scripts/locals3.py --port 9000`` (until Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["LocalS3"]

logger = logging.getLogger(__name__)


class LocalS3:
    """``python -m moto.server`` on ``port``; its output appended to ``log_path``."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a boto3 client (a worker, ``hotswap publish``) needs to use this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60) -> LocalS3:
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server not answering on {self.endpoint} after {timeout}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def __enter__(self) -> LocalS3:
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
    parser.add_argument("--port", type=int, default=9000)
    port = parser.parse_args().port
    with LocalS3(port, Path("locals3.log")) as s3:
        print(f"S3 at {s3.endpoint}; export " + " ".join(f"{k}={v}" for k, v in s3.env().items()))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
