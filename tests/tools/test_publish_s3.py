"""`publish --by-reference s3://`: the object lands at the documented key; errors: one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

from service.tools.publish import PublishRequest, build_message
from tests.s3server import S3Bucket
from tests.tools.test_cli_errors import hotswap, one_error_line


def test_the_artifact_is_uploaded_under_prefix_name_version(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx bytes, not loaded here")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    target = f"s3://{s3_bucket.name}/team/prod/"
    message = build_message(PublishRequest(model, "wine", "7", store_s3=target))
    key = f"team/prod/wine/7-{digest[:12]}.onnx"
    assert (message.location, message.data, message.sha256) == (
        f"s3://{s3_bucket.name}/{key}",
        None,
        digest,
    )
    stored = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
    assert stored == model.read_bytes()
    bare = build_message(PublishRequest(model, "wine", "8", store_s3=f"s3://{s3_bucket.name}"))
    assert bare.location == f"s3://{s3_bucket.name}/wine/8-{digest[:12]}.onnx"


def test_a_missing_bucket_is_one_line(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    args = ["publish", str(model), "--name", "wine", "--version", "1"]
    line = one_error_line(hotswap(*args, "--by-reference", f"s3://{s3_bucket.name}-gone/p"))
    assert line.startswith(f"error: cannot upload s3://{s3_bucket.name}-gone/p/wine/1-"), line
    assert "NoSuchBucket" in line
    line = one_error_line(hotswap(*args, "--by-reference", "s3://"))
    assert "needs a bucket" in line, line
