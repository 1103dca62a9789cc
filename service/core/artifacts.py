"""Getting a model's bytes: inline or by reference, size-capped and checksummed.

Runs in a worker thread (blocking I/O is fine here), never on the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from service.core import errors
from service.core.messages import ModelMessage

__all__ = ["fetch_artifact", "sha256_hex"]

logger = logging.getLogger(__name__)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_file(url: str, limit: int) -> bytes:
    path = Path(unquote(urlparse(url).path))
    try:
        size = path.stat().st_size
        if size > limit:
            raise errors.ArtifactTooLarge(f"{path} is {size} bytes, limit {limit}")
        return path.read_bytes()
    except OSError as exc:
        raise errors.FetchFailed(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_http(url: str, limit: int, timeout: float) -> bytes:
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            response.raise_for_status()
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise errors.ArtifactTooLarge(f"{url} is over the {limit} byte limit")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise errors.FetchFailed(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None


def fetch_artifact(message: ModelMessage, *, limit: int, timeout: float) -> bytes:
    """Return the artifact's bytes after checking their size and sha256."""
    if message.data is not None:
        artifact = message.artifact_bytes(limit)
    else:
        assert message.location is not None
        scheme = urlparse(message.location).scheme
        if scheme == "file":
            artifact = _read_file(message.location, limit)
        elif scheme in {"http", "https"}:
            artifact = _read_http(message.location, limit, timeout)
        else:
            raise errors.FetchFailed(f"location scheme {scheme!r} is not supported")
    if len(artifact) > limit:
        raise errors.ArtifactTooLarge(f"artifact is {len(artifact)} bytes, limit {limit}")
    actual = sha256_hex(artifact)
    if not hmac.compare_digest(actual, message.sha256.lower()):
        raise errors.ChecksumMismatch(f"sha256 is {actual}, message says {message.sha256}")
    return artifact
