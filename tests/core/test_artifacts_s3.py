"""s3:// locations against a real S3 endpoint (moto's server, a separate process).

The same rules as http(s)://: the byte cap, the whole-fetch deadline (a proxy
that drips S3's answer), sha256 before anything is loaded, S3's final errors
(NoSuchKey, NoSuchBucket, AccessDenied) not retried and its transient ones
(SlowDown, a refused connection) retried; and no message ever shows the
presigned URL, which is a credential while it lives.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts.localkafka import free_port
from service.core import errors
from service.core.artifacts import FetchPolicy, fetch_artifact
from service.core.artifacts_s3 import presigned_url, split_s3
from service.core.messages import ModelMessage
from tests.models import sha256_of
from tests.s3server import DripProxy, S3Bucket

ARTIFACT = bytes(range(256)) * 40  # 10240 bytes; nothing is loaded here
# A deadline no passing test reaches (see test_artifacts_http.py).
FAST = FetchPolicy(max_bytes=1_000_000, timeout=40.0, attempts=3, backoff=0.05)


def _fetch(location: str, policy: FetchPolicy = FAST, digest: str | None = None) -> bytes:
    message = ModelMessage(
        name="m", version="1", location=location, sha256=digest or sha256_of(ARTIFACT)
    )
    return fetch_artifact(message, policy)


def _rejected(location: str, policy: FetchPolicy = FAST) -> tuple[errors.ModelRejected, float]:
    started = time.monotonic()
    with pytest.raises(errors.ModelRejected) as info:
        _fetch(location, policy)
    detail = info.value.detail
    assert "Signature" not in detail, detail  # never the presigned URL: it is a credential
    assert "X-Amz" not in detail, detail
    return info.value, time.monotonic() - started


def test_an_object_is_fetched_and_checked(s3_bucket: S3Bucket) -> None:
    location = s3_bucket.put("models/m/1.onnx", ARTIFACT)
    assert _fetch(location) == ARTIFACT


def test_a_key_with_spaces_and_question_marks_is_taken_as_written(s3_bucket: S3Bucket) -> None:
    location = s3_bucket.put("odd dir/m?v=1#x.onnx", ARTIFACT)
    assert split_s3(location) == (s3_bucket.name, "odd dir/m?v=1#x.onnx")
    assert _fetch(location) == ARTIFACT


def test_a_missing_object_is_final(s3_bucket: S3Bucket) -> None:
    error, _ = _rejected(f"s3://{s3_bucket.name}/no/such.onnx")
    assert (error.reason, error.transient) == ("fetch_failed", False)
    assert "404 NoSuchKey" in error.detail
    assert "time(s)" not in error.detail  # not retried: a transient failure counts its attempts


def test_a_missing_bucket_is_final(s3_bucket: S3Bucket) -> None:
    error, _ = _rejected(f"s3://{s3_bucket.name}-gone/m.onnx")
    assert (error.reason, error.transient) == ("fetch_failed", False)
    assert "NoSuchBucket" in error.detail


def test_an_object_over_the_cap_is_refused(s3_bucket: S3Bucket) -> None:
    location = s3_bucket.put("big.onnx", b"\0" * 50_000)
    error, _ = _rejected(location, FetchPolicy(max_bytes=20_000, timeout=5.0))
    assert error.reason == "artifact_too_large"


def test_a_different_object_fails_the_checksum(s3_bucket: S3Bucket) -> None:
    location = s3_bucket.put("swapped.onnx", ARTIFACT[::-1])
    error, _ = _rejected(location)
    assert error.reason == "sha256_mismatch"


def test_a_dripping_store_is_cut_at_the_deadline(
    s3_bucket: S3Bucket, s3_drip: DripProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = s3_bucket.put("slow/m.onnx", ARTIFACT)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_drip.endpoint)
    error, took = _rejected(location, FetchPolicy(max_bytes=1_000_000, timeout=1.5, attempts=2))
    assert (error.reason, error.transient) == ("fetch_timeout", True)
    # one byte every 0.1 s: uncut, the answer would take minutes (the rest is slack for a
    # loaded machine, not a speed asserted)
    assert 1.5 <= took < 10, took


def test_a_store_that_is_down_is_transient_and_retried(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # refused
    error, took = _rejected(f"s3://{s3_bucket.name}/m.onnx")
    assert (error.reason, error.transient) == ("fetch_transient", True)
    assert "3 time(s)" in error.detail
    assert took < FAST.timeout / 2  # the attempts ran out, well before the deadline


class _S3Errors(BaseHTTPRequestHandler):
    """What AWS answers that moto does not: throttling and a denied read, in S3's XML."""

    hits: Counter[str] = Counter()

    def do_GET(self) -> None:
        bucket = self.path.split("/")[1].split("?")[0]
        self.hits[bucket] += 1
        status, code = (503, "SlowDown") if bucket == "throttled" else (403, "AccessDenied")
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>no</Message></Error>"
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def aws_errors(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _S3Errors)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("aws_errors")
def test_throttling_is_retried_and_access_denied_is_not() -> None:
    throttled, _ = _rejected("s3://throttled/m.onnx")
    assert (throttled.reason, _S3Errors.hits["throttled"]) == ("fetch_transient", 3)
    assert "503 SlowDown" in throttled.detail
    denied, _ = _rejected("s3://denied/m.onnx")
    assert (denied.reason, _S3Errors.hits["denied"]) == ("fetch_failed", 1)
    assert "403 AccessDenied" in denied.detail


@pytest.mark.parametrize("location", ["s3://bucket", "s3://bucket/", "s3:///key.onnx"])
def test_a_location_without_bucket_or_key_is_refused(location: str) -> None:
    error, _ = _rejected(location)
    assert error.reason == "location_refused"


def test_without_credentials_the_request_goes_unsigned(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    url = presigned_url(f"s3://{s3_bucket.name}/m.onnx", expires=5)
    assert "Signature" not in url
    assert url.startswith(s3_bucket.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert "X-Amz-Signature=" in presigned_url(f"s3://{s3_bucket.name}/m.onnx", expires=5)
