"""``s3://bucket/key`` locations: boto3 signs the request, the bounded HTTP fetch reads it.

boto3 finds the credentials (its standard chain: environment, shared files,
SSO, container and instance roles) and the endpoint (``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3`` for an S3-compatible store) and presigns one GET. The
bytes then come through :mod:`service.core.artifacts`' HTTP path, so an S3
object obeys the same rules as an ``https://`` location: byte cap counted
while reading, one deadline for the whole fetch, retries of transient failures
(S3's ``500 InternalError``, ``503 SlowDown``, refused or silent connections)
and none of final ones (``404 NoSuchKey``/``NoSuchBucket``, ``403
AccessDenied``). boto3's own reads block until a whole chunk arrives, so they
could not hold a deadline against a server that drips bytes; a presigned URL
can. The URL is a credential while it lives: messages name the ``s3://``
location instead. Without credentials the request goes unsigned (a public
bucket). boto3 is imported on the first ``s3://`` fetch, not at start.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from typing import TYPE_CHECKING, Any

from service.core import errors

if TYPE_CHECKING:
    import httpx

__all__ = ["presigned_url", "s3_error_code", "split_s3"]

logger = logging.getLogger(__name__)

_CODE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_MARGIN = 60  # seconds a presigned URL outlives the fetch deadline (clock skew)


def split_s3(location: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); the key is taken as written (``?`` included)."""
    if not location.startswith("s3://"):
        raise errors.LocationRefused(f"{location!r} is not an s3:// location")
    bucket, _, key = location[len("s3://") :].partition("/")
    if not bucket or not key:
        raise errors.LocationRefused(f"{location!r} names no bucket or no key (s3://BUCKET/KEY)")
    return bucket, key


@functools.lru_cache(maxsize=4)
def _client(environment: tuple[tuple[str, str], ...]) -> Any:
    """One S3 client per AWS environment (making one costs ~0.5 s: boto3 loads its models).

    Keyed by every ``AWS_*`` variable, so a changed endpoint or key gets its own
    client; credentials a provider refreshes (roles, SSO) refresh inside it.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session()
    signed = session.get_credentials() is not None
    return session.client("s3", config=Config(signature_version="s3v4" if signed else UNSIGNED))


def presigned_url(location: str, *, expires: float) -> str:
    """A GET URL for ``location``, valid a little longer than ``expires`` seconds."""
    bucket, key = split_s3(location)
    from botocore.exceptions import (
        BotoCoreError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    try:
        return str(
            _client(environment).generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=max(1, math.ceil(expires)) + _MARGIN,
            )
        )
    except (PartialCredentialsError, ProfileNotFound, NoCredentialsError, ValueError) as exc:
        raise errors.FetchFailed(f"cannot sign a request for {location}: {exc}") from None
    except BotoCoreError as exc:  # a credential provider that did not answer, for one
        raise errors.FetchTransient(f"cannot sign a request for {location}: {exc}") from None


async def s3_error_code(response: httpx.Response, shown: str | None) -> str:
    """S3's error code (`` NoSuchKey``, `` SlowDown``) from the first 2 KB, or ``""``.

    Read only for ``s3://`` locations (``shown`` set); a body that fails to
    arrive costs the code, never the classification by status.
    """
    if shown is None or not shown.startswith("s3://"):
        return ""
    import httpx

    head = b""
    try:
        async for chunk in response.aiter_raw(2048):
            head += chunk
            if len(head) >= 2048:
                break
    except httpx.HTTPError:
        return ""
    found = _CODE.search(head)
    return f" {found.group(1).decode()}" if found else ""
