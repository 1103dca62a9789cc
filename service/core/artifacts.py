"""Getting a model's bytes: inline or by reference, bounded in size, time and place.

A location is hostile until proven otherwise. Bytes are counted while they are
read (``stat`` and ``Content-Length`` are never trusted: ``/dev/zero`` says 0),
so memory stays under ``max_bytes``; ``timeout`` is a deadline for the whole
fetch, retries included (a server dripping a byte a second is cut at it);
``file://`` paths are resolved (symlinks, ``..``) and must be regular files
under one of ``roots``; HTTP redirects are followed by hand, at most
``max_redirects``, never to another scheme (but http to https). Transient
failures (HTTP 5xx/408/429, refused, reset, a connection silent for
``idle_timeout``) are retried with exponential backoff within the deadline;
anything else is final. ``s3://bucket/key`` is fetched over the same HTTP path
from a URL boto3 presigns (:mod:`service.core.artifacts_s3`), so it keeps every
rule above; its messages name the ``s3://`` location, never the signed URL.
Every refusal is a named :mod:`service.core.errors`.

:func:`fetch_artifact` blocks: call it from a worker thread, never on an event
loop. It shares no state between calls, so several may run at once, and it
returns soon after ``cancel`` is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import os
import random
import ssl
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from service.core import errors
from service.core.artifacts_s3 import presigned_url, s3_error_code
from service.core.messages import ModelMessage

if TYPE_CHECKING:  # imported by the first http(s)/s3 fetch: most workers never make one
    import httpx

__all__ = ["FetchPolicy", "fetch_artifact", "sha256_hex"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16
_POLL = 0.1  # seconds between looks at ``cancel`` while an HTTP fetch runs
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRIED_STATUS = frozenset({408, 429})


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """The bounds of one fetch (from HOTSWAP_MAX_MODEL_BYTES, _FETCH_*, _MODEL_ROOTS)."""

    max_bytes: int = 200_000_000
    timeout: float = 30.0  # deadline of the whole fetch, retries and backoff included
    roots: tuple[Path, ...] = ()  # file:// only under these; none: file:// is refused
    attempts: int = 4
    backoff: float = 0.5  # first retry delay; doubles per retry, capped at backoff_max
    backoff_max: float = 8.0
    max_redirects: int = 5

    @property
    def idle_timeout(self) -> float:
        """A connection silent this long is dropped and retried: a share of the deadline."""
        return max(1.0, self.timeout / self.attempts)


class _Transient(Exception):
    """One attempt failed in a way that a later attempt may not."""


class _Sink:
    """Collects bytes up to ``limit`` (never more in memory) while hashing them."""

    def __init__(self, where: str, limit: int) -> None:
        self.where, self.limit, self.size = where, limit, 0
        self.buffer = io.BytesIO()
        self.digest = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise errors.ArtifactTooLarge(f"{self.where} is over the {self.limit} byte limit")
        self.buffer.write(chunk)
        self.digest.update(chunk)


# --- file:// -----------------------------------------------------------------------


def _local_path(url: str, roots: tuple[Path, ...]) -> Path:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise errors.LocationRefused(f"file location names a host ({parsed.netloc!r})")
    path = Path(unquote(parsed.path))
    if not path.is_absolute():
        raise errors.LocationRefused(f"file location {url!r} is not an absolute path")
    try:
        real = path.resolve()  # symlinks and `..` resolved before the check
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise errors.FetchFailed(f"cannot read {path}: {exc}") from None
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        allowed = os.pathsep.join(str(r) for r in roots) or "none"
        raise errors.LocationOutsideRoots(
            f"{path} (really {real}) is outside HOTSWAP_MODEL_ROOTS ({allowed})"
        )
    return real


def _read_file(url: str, policy: FetchPolicy, deadline: float, cancel: threading.Event) -> _Sink:
    path = _local_path(url, policy.roots)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except OSError as exc:
        raise errors.FetchFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode  # of what was opened, not of what the path named
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise errors.NotARegularFile(f"{path} is not a regular file (mode {mode:o})")
    with open(fd, "rb", buffering=0) as file:
        sink = _Sink(str(path), policy.max_bytes)
        while chunk := file.read(_CHUNK):
            sink.add(chunk)
            if cancel.is_set():
                raise errors.FetchCancelled(f"stopped while reading {path}")
            if time.monotonic() > deadline:
                raise errors.FetchTimeout(f"reading {path} took over {policy.timeout:g}s")
    return sink


# --- http(s):// --------------------------------------------------------------------


def _redirect_target(
    response: httpx.Response, current: httpx.URL, shown: str | None = None
) -> httpx.URL:
    import httpx

    try:
        target = current.join(response.headers["location"])
    except (KeyError, httpx.InvalidURL) as exc:
        raise errors.FetchFailed(
            f"HTTP {response.status_code} without a usable Location: {exc}"
        ) from None
    allowed = {"https"} if current.scheme == "https" else {"http", "https"}
    if target.scheme not in allowed:
        named = "a signed URL" if shown else str(target)  # a presigned URL is a credential
        raise errors.RedirectRefused(f"{shown or current} redirects to {target.scheme}: ({named})")
    return target


async def _http_attempt(
    client: httpx.AsyncClient, url: str, policy: FetchPolicy, shown: str | None = None
) -> _Sink:
    import httpx

    current = httpx.URL(url)
    for _ in range(policy.max_redirects + 1):
        where = shown or str(current)  # a presigned URL is a credential: never shown
        request = client.build_request("GET", current)
        response = await client.send(request, stream=True)
        try:
            status = response.status_code
            if status in _REDIRECTS and "location" in response.headers:
                current = _redirect_target(response, current, shown)
                continue
            if status >= 500 or status in _RETRIED_STATUS:
                raise _Transient(
                    f"HTTP {status}{await s3_error_code(response, shown)} from {where}"
                )
            if not 200 <= status < 300:
                code = await s3_error_code(response, shown)
                raise errors.FetchFailed(f"HTTP {status}{code} from {where}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:  # a refusal, never trust
                raise errors.ArtifactTooLarge(
                    f"{where} declares {declared} bytes, limit {policy.max_bytes}"
                )
            sink = _Sink(where, policy.max_bytes)
            async for chunk in response.aiter_raw(_CHUNK):  # raw: no decompression bomb
                sink.add(chunk)
            return sink
        finally:
            await response.aclose()
    raise errors.RedirectRefused(f"{shown or url}: more than {policy.max_redirects} redirects")


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _http_with_retries(
    url: str, policy: FetchPolicy, deadline: float, shown: str | None
) -> _Sink:
    import httpx

    idle, where, delay = policy.idle_timeout, shown or url, policy.backoff
    failures: list[str] = []
    headers = {"Accept-Encoding": "identity"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(idle), headers=headers) as client:
        for attempt in range(1, policy.attempts + 1):
            try:
                return await _http_attempt(client, url, policy, shown)
            except _Transient as exc:
                failures.append(str(exc))
            except httpx.TransportError as exc:
                if _is_certificate_error(exc) or isinstance(exc, httpx.UnsupportedProtocol):
                    raise errors.FetchFailed(f"cannot fetch {where}: {exc}") from None
                failures.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            except httpx.HTTPError as exc:  # invalid URL, local protocol errors: final
                raise errors.FetchFailed(
                    f"cannot fetch {where}: {type(exc).__name__}: {exc}"
                ) from None
            pause = min(delay, policy.backoff_max) * random.uniform(0.5, 1.0)
            delay *= 2
            if attempt == policy.attempts or time.monotonic() + pause >= deadline:
                break
            logger.info(
                "fetch %s failed (%s); retry %d in %.2fs", where, failures[-1], attempt, pause
            )
            await asyncio.sleep(pause)
    raise errors.FetchTransient(
        f"{where} failed transiently {len(failures)} time(s) within {policy.timeout:g}s "
        f"(HOTSWAP_FETCH_ATTEMPTS={policy.attempts}); last: {failures[-1]}"
    )


async def _http_bounded(
    url: str,
    policy: FetchPolicy,
    deadline: float,
    cancel: threading.Event,
    shown: str | None = None,
) -> _Sink:
    async def bounded() -> _Sink:
        try:
            async with asyncio.timeout_at(deadline):  # loop.time() is time.monotonic()
                return await _http_with_retries(url, policy, deadline, shown)
        except TimeoutError:
            raise errors.FetchTimeout(
                f"{shown or url} did not arrive within HOTSWAP_FETCH_TIMEOUT={policy.timeout:g}s"
            ) from None

    task = asyncio.ensure_future(bounded())
    while not task.done():
        await asyncio.wait({task}, timeout=_POLL)
        if cancel.is_set() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise errors.FetchCancelled(f"stopped while fetching {shown or url}")
    return task.result()


# --- the entry point ------------------------------------------------------------------


def _fetch_location(
    location: str, policy: FetchPolicy, deadline: float, cancel: threading.Event
) -> _Sink:
    if cancel.is_set():
        raise errors.FetchCancelled(f"stopping: {location} not fetched")
    scheme = urlparse(location).scheme
    if scheme == "file":
        return _read_file(location, policy, deadline, cancel)
    if scheme in {"http", "https"}:
        return asyncio.run(_http_bounded(location, policy, deadline, cancel))
    if scheme == "s3":
        url = presigned_url(location, expires=deadline - time.monotonic())
        return asyncio.run(_http_bounded(url, policy, deadline, cancel, shown=location))
    raise errors.LocationRefused(f"location scheme {scheme!r} is not supported")


def fetch_artifact(
    message: ModelMessage, policy: FetchPolicy, *, cancel: threading.Event | None = None
) -> bytes:
    """The artifact's bytes, size- and sha256-checked; raises a ``FetchFailed`` subclass.

    Blocking (run it in a worker thread); returns or raises within
    ``policy.timeout`` (plus one chunk or one poll of ``cancel``).
    """
    if message.data is not None:
        artifact = message.artifact_bytes(policy.max_bytes)
        actual = sha256_hex(artifact)
    else:
        assert message.location is not None
        started = time.monotonic()
        sink = _fetch_location(
            message.location, policy, started + policy.timeout, cancel or threading.Event()
        )
        artifact, actual = sink.buffer.getvalue(), sink.digest.hexdigest()
        logger.debug(
            "fetched %d bytes from %s in %.3fs",
            sink.size,
            message.location,
            time.monotonic() - started,
        )
    if len(artifact) > policy.max_bytes:
        raise errors.ArtifactTooLarge(
            f"artifact is {len(artifact)} bytes, limit {policy.max_bytes}"
        )
    if not hmac.compare_digest(actual, message.sha256.lower()):
        raise errors.ChecksumMismatch(f"sha256 is {actual}, message says {message.sha256}")
    return artifact
