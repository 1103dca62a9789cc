"""``hotswap publish --by-reference s3://BUCKET/PREFIX``: upload the artifact, name its location.

The object key is ``PREFIX/NAME/VERSION-SHA12.onnx`` (the first 12 hex digits
of the artifact's sha256), so two different artifacts published under one
version never overwrite each other, and the object a worker is reading is
never replaced under it. boto3 finds credentials and endpoint as the workers'
does (its standard chain, ``AWS_ENDPOINT_URL``); the workers need read access
to the same key.
"""

from __future__ import annotations

import logging

from service.tools.errors import ToolError, one_line

__all__ = ["object_key", "upload_artifact"]

logger = logging.getLogger(__name__)


def object_key(prefix: str, name: str, version: str, digest: str) -> str:
    head = prefix.strip("/")
    return (
        f"{head}/{name}/{version}-{digest[:12]}.onnx"
        if head
        else f"{name}/{version}-{digest[:12]}.onnx"
    )


def upload_artifact(target: str, name: str, version: str, digest: str, artifact: bytes) -> str:
    """Put ``artifact`` under ``target`` (``s3://bucket[/prefix]``); return its ``s3://`` URL."""
    bucket, _, prefix = target.removeprefix("s3://").partition("/")
    if not target.startswith("s3://") or not bucket:
        raise ToolError(f"--by-reference {target!r}: give s3://BUCKET or s3://BUCKET/PREFIX")
    key = object_key(prefix, name, version, digest)
    location = f"s3://{bucket}/{key}"
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.session.Session().client("s3")
        client.put_object(
            Bucket=bucket, Key=key, Body=artifact, ContentType="application/octet-stream"
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ToolError(
            f"cannot upload {location}: {code} ({one_line(exc, named=False)}); check the "
            "bucket exists and your AWS credentials may write to it"
        ) from None
    except (BotoCoreError, ValueError) as exc:
        raise ToolError(
            f"cannot upload {location}: {one_line(exc)}; check AWS_ENDPOINT_URL and your "
            "AWS credentials (boto3's standard chain)"
        ) from None
    logger.info("uploaded %d bytes to %s", len(artifact), location)
    return location
