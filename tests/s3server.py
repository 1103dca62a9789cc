"""S3 fixtures: moto's standalone server as a process (one per session), a bucket per test.

``s3_bucket`` points boto3 (this process, and workers and CLI runs started
from it, which inherit the environment) at the server with ``AWS_ENDPOINT_URL``
and dummy credentials. ``s3_drip`` is a real TCP proxy in front of it that
answers requests for keys under ``slow/`` one byte every 0.1 s: a slow store
on the network, for the fetch deadline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from scripts.localkafka import free_port
from scripts.locals3 import LocalS3

__all__ = ["DripProxy", "S3Bucket", "local_s3", "s3_bucket", "s3_drip"]


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    with LocalS3(free_port(), tmp_path_factory.mktemp("s3") / "moto.log") as s3:
        yield s3


@pytest.fixture(scope="session")
def _s3_client(local_s3: LocalS3) -> Any:
    """The tests' own client (made once: a boto3 client costs ~0.5 s)."""
    import boto3

    env = local_s3.env()
    return boto3.session.Session().client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


@dataclass
class S3Bucket:
    """A fresh bucket on the local S3 server, with the client that made it."""

    name: str
    client: Any
    endpoint: str

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return f"s3://{self.name}/{key}"


@pytest.fixture
def s3_bucket(local_s3: LocalS3, _s3_client: Any, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    for name, value in local_s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance role
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    _s3_client.create_bucket(Bucket=bucket)
    return S3Bucket(bucket, _s3_client, local_s3.endpoint)


class DripProxy:
    """Forwards TCP to ``upstream``; the answer to a request for ``.../slow/...`` drips."""

    def __init__(self, upstream: int, interval: float = 0.1) -> None:
        self.upstream, self.interval = upstream, interval
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            first = conn.recv(65536)
            slow = b"/slow/" in first.split(b"\r\n", 1)[0]
            up.sendall(first)
            threading.Thread(target=self._pump, args=(conn, up, False), daemon=True).start()
            self._pump(up, conn, slow)

    def _pump(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while not self.stop.is_set() and (data := src.recv(65536)):
                if not slow:
                    dst.sendall(data)
                    continue
                for i in range(len(data)):
                    dst.sendall(data[i : i + 1])
                    if self.stop.wait(self.interval):
                        return
        except OSError:
            pass  # the other side hung up (the client gave up at its deadline)
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture(scope="session")
def s3_drip(local_s3: LocalS3) -> Iterator[DripProxy]:
    proxy = DripProxy(local_s3.port)
    yield proxy
    proxy.close()
