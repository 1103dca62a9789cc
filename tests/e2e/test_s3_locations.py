"""s3:// models end to end: a real worker, a real broker, a real S3 endpoint (moto's server).

``hotswap publish FILE --by-reference s3://BUCKET/PREFIX`` uploads the
artifact and the worker serves it; then a missing object, a store that drips,
an object over the byte cap and one whose sha256 differs are each rejected
with their reason while the version before keeps serving. The worker reaches
S3 through a TCP proxy that drips answers for keys under ``slow/``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import time
from pathlib import Path

import orjson
import pytest

from scripts.harness import WorkerProcess, consume, run_cli, send_raw, wait_for
from service.tools.publish import PublishRequest, build_message
from tests.brokers import WineWorker
from tests.s3server import DripProxy, S3Bucket

pytestmark = pytest.mark.integration

DEADLINE = 3.0  # HOTSWAP_FETCH_TIMEOUT of the worker under test
LIMIT = 2_000_000  # HOTSWAP_MAX_MODEL_BYTES
ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


def _by_reference(version: str, location: str, artifact: bytes) -> bytes:
    digest = hashlib.sha256(artifact).hexdigest()
    doc = {"name": "wine", "version": version, "location": location, "sha256": digest}
    return orjson.dumps(doc)


def _rejection(worker: WorkerProcess, version: str) -> dict[str, str] | None:
    for entry in worker.get("/models/wine/history").json():
        if entry["version"] == version and entry["status"] == "rejected":
            return dict(entry)
    return None


def test_a_model_published_to_s3_serves_and_bad_objects_are_rejected(
    wine_worker: WineWorker,
    trained: dict[str, Path],
    s3_bucket: S3Bucket,
    s3_drip: DripProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_drip.endpoint)  # the worker's way to S3
    settings, worker = wine_worker(
        fetch_timeout=DEADLINE, max_model_bytes=LIMIT, fetch_attempts=2, fetch_backoff=0.2
    )
    bucket = s3_bucket.name

    done = run_cli(
        settings,
        "publish",
        str(trained["wine-logreg"]),
        "--name",
        "wine",
        "--version",
        "2",
        "--by-reference",
        f"s3://{bucket}/prod",
    )
    assert f"s3://{bucket}/prod/wine/2-" in done.stdout, done.stdout
    wait_for(lambda: worker.model_version("wine") == "2", 30, "v2 from S3 serving")
    send_raw(
        settings,
        settings.data_topic,
        [(b"r1", orjson.dumps({"id": "r1", "features": ROW, "model": "wine"}))],
    )
    [scored] = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 1)
    assert scored.json()["version"] == "2"

    artifact = base64.b64decode(
        build_message(PublishRequest(trained["wine-logreg"], "wine", "x")).data or ""
    )
    cases = [  # (version, location, bytes the message's sha256 is of, reason, detail part)
        ("missing", f"s3://{bucket}/prod/wine/gone.onnx", artifact, "fetch_failed", "NoSuchKey"),
        ("slow", s3_bucket.put("slow/wine.onnx", artifact), artifact, "fetch_timeout", "s3://"),
        (
            "oversize",
            s3_bucket.put("big/wine.onnx", b"\0" * (LIMIT + 1)),
            artifact,
            "artifact_too_large",
            "s3://",
        ),
        (
            "swapped",
            s3_bucket.put("swapped/wine.onnx", artifact),
            artifact + b"\0",
            "sha256_mismatch",
            "sha256",
        ),
    ]
    for version, location, expected, reason, part in cases:
        started = time.monotonic()
        send_raw(
            settings,
            settings.model_topic,
            [(b"wine", _by_reference(version, location, expected))],
        )
        entry = wait_for(
            functools.partial(_rejection, worker, version), DEADLINE + 15, f"{version} rejected"
        )
        took = time.monotonic() - started
        assert (entry["reason"], part in entry["detail"]) == (reason, True), entry
        assert "Signature" not in entry["detail"], entry  # never the presigned URL
        # The drip alone would hold a fetch for ever; the slack is the topic round trip
        # on a loaded machine, not a speed asserted.
        assert took < DEADLINE + 20, f"{version} rejected after {took:.1f}s"
        assert worker.model_version("wine") == "2", f"v2 stopped serving after {version}"
