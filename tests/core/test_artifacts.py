"""Fetching a model's bytes: inline, file:// and http://, size-capped and checksummed."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.core import errors
from service.core.artifacts import fetch_artifact, sha256_hex
from service.core.messages import ModelMessage
from tests.models import sha256_of

ARTIFACT = bytes(range(256)) * 40  # 10240 bytes, any content will do: nothing is loaded here
LIMIT = 1_000_000
SLOW_SECONDS = 5.0


def _message(
    *, data: bytes | None = None, location: str | None = None, sha256: str | None = None
) -> ModelMessage:
    return ModelMessage(
        name="wine",
        version="1",
        data=base64.b64encode(data).decode() if data is not None else None,
        location=location,
        sha256=sha256 or sha256_of(ARTIFACT),
    )


def _fetch(message: ModelMessage, *, limit: int = LIMIT, timeout: float = 5.0) -> bytes:
    return fetch_artifact(message, limit=limit, timeout=timeout)


class _Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.release.wait(SLOW_SECONDS)
        if self.path in {"/model.onnx", "/slow"}:
            self.send_response(200)
            self.send_header("Content-Length", str(len(ARTIFACT)))
            self.end_headers()
            self.wfile.write(ARTIFACT)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/model.onnx")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client of /slow hangs up on purpose


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --- inline --------------------------------------------------------------------


def test_inline_ok() -> None:
    assert _fetch(_message(data=ARTIFACT)) == ARTIFACT


def test_inline_uppercase_digest_ok() -> None:
    assert _fetch(_message(data=ARTIFACT, sha256=sha256_of(ARTIFACT).upper())) == ARTIFACT


def test_inline_sha256_mismatch() -> None:
    with pytest.raises(errors.ChecksumMismatch) as info:
        _fetch(_message(data=ARTIFACT + b"x"))
    assert info.value.reason == "sha256_mismatch"


@pytest.mark.parametrize("data", ["not base64!!", "AAA", "AA=A", "YWJj\n", "é"])
def test_inline_invalid_base64(data: str) -> None:
    message = ModelMessage(name="wine", version="1", data=data, sha256=sha256_of(b""))
    with pytest.raises(errors.InvalidBase64) as info:
        _fetch(message)
    assert info.value.reason == "invalid_base64"


def test_inline_over_limit() -> None:
    with pytest.raises(errors.ArtifactTooLarge) as info:
        _fetch(_message(data=ARTIFACT), limit=len(ARTIFACT) - 1)
    assert info.value.reason == "artifact_too_large"


@pytest.mark.parametrize("size", [300, 301, 302])
def test_inline_exactly_at_limit_is_accepted(size: int) -> None:
    # "Larger artifacts are rejected": one of exactly `limit` bytes is not larger,
    # whatever base64 padding it needs (300 needs none, 301 and 302 do).
    data = ARTIFACT[:size]
    message = _message(data=data, sha256=sha256_of(data))
    assert _fetch(message, limit=size) == data


# --- file:// -------------------------------------------------------------------


def test_file_location_ok(tmp_path: Path) -> None:
    path = tmp_path / "model dir" / "m.onnx"
    path.parent.mkdir()
    path.write_bytes(ARTIFACT)
    assert _fetch(_message(location=path.as_uri())) == ARTIFACT
    assert _fetch(_message(location=path.as_uri()), limit=len(ARTIFACT)) == ARTIFACT


def test_file_location_missing(tmp_path: Path) -> None:
    with pytest.raises(errors.FetchFailed) as info:
        _fetch(_message(location=(tmp_path / "absent.onnx").as_uri()))
    assert info.value.reason == "fetch_failed"


def test_file_location_directory(tmp_path: Path) -> None:
    with pytest.raises(errors.FetchFailed):
        _fetch(_message(location=tmp_path.as_uri()))


def test_file_location_over_limit(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(ARTIFACT)
    with pytest.raises(errors.ArtifactTooLarge):
        _fetch(_message(location=path.as_uri()), limit=len(ARTIFACT) - 1)


def test_file_location_sha256_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(ARTIFACT[:-1])
    with pytest.raises(errors.ChecksumMismatch):
        _fetch(_message(location=path.as_uri()))


# --- http:// -------------------------------------------------------------------


def test_http_location_ok(http_base: str) -> None:
    assert _fetch(_message(location=f"{http_base}/model.onnx")) == ARTIFACT


def test_http_follows_redirect(http_base: str) -> None:
    assert _fetch(_message(location=f"{http_base}/moved")) == ARTIFACT


def test_http_404(http_base: str) -> None:
    with pytest.raises(errors.FetchFailed, match="404"):
        _fetch(_message(location=f"{http_base}/absent.onnx"))


def test_http_over_limit(http_base: str) -> None:
    with pytest.raises(errors.ArtifactTooLarge):
        _fetch(_message(location=f"{http_base}/model.onnx"), limit=1000)


def test_http_sha256_mismatch(http_base: str) -> None:
    with pytest.raises(errors.ChecksumMismatch):
        _fetch(_message(location=f"{http_base}/model.onnx", sha256="0" * 64))


def test_http_timeout(http_base: str) -> None:
    with pytest.raises(errors.FetchFailed, match="Timeout"):
        _fetch(_message(location=f"{http_base}/slow"), timeout=0.3)


def test_http_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(errors.FetchFailed, match="ConnectError"):
        _fetch(_message(location=f"http://127.0.0.1:{port}/model.onnx"), timeout=2)


# --- other schemes -------------------------------------------------------------


@pytest.mark.parametrize(
    "location", ["ftp://example.com/m.onnx", "s3://bucket/m.onnx", "/tmp/m.onnx", "m.onnx"]
)
def test_unsupported_scheme(location: str) -> None:
    with pytest.raises(errors.FetchFailed, match="not supported"):
        _fetch(_message(location=location))
