"""http(s):// locations against a real local server: deadlines, caps, retries, redirects.

One threaded HTTP server on a free port plays every hostile or flaky server;
each test uses its own path key, so hit counts (how often a client asked)
prove what was retried and what was not.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from service.core import errors
from service.core.artifacts import FetchPolicy, _redirect_target, fetch_artifact
from service.core.messages import ModelMessage
from tests.models import sha256_of

ARTIFACT = bytes(range(256)) * 40  # 10240 bytes; nothing is loaded here
# A deadline no passing test reaches: a refusal "not waited for" is told apart from one that
# waits by half of it, which a loaded machine never takes for a few local requests.
FAST = FetchPolicy(max_bytes=1_000_000, timeout=40.0, attempts=3, backoff=0.05)


class _Handler(BaseHTTPRequestHandler):
    """``/<behaviour>/<key>``: the key separates tests, ``hits`` counts per path."""

    hits: Counter[str] = Counter()
    stop = threading.Event()
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        n = self.hits[self.path]
        kind = self.path.split("/")[1]
        if kind == "ok" or (kind == "flaky" and n > 2) or (kind in {"stall1", "reset1"} and n > 1):
            self._send(200, ARTIFACT)
        elif kind in {"flaky", "503"}:
            self._send(503, b"busy")
        elif kind == "429":
            self._send(429, b"slow down")
        elif kind in {"404", "403"}:
            self._send(int(kind), b"no")
        elif kind == "reset1":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            self.close_connection = True  # closed with RST, no response at all
        elif kind == "stall1":
            self._headers(200, len(ARTIFACT))
            self.stop.wait(30)  # headers, then silence
        elif kind == "drip":  # one byte every 50 ms, forever
            self._headers(200, 100_000)
            while not self.stop.wait(0.05):
                self.wfile.write(b"x")
                self.wfile.flush()
        elif kind == "endless":  # no Content-Length: read until the connection closes
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            block = b"\0" * 65536
            while not self.stop.is_set():
                self.wfile.write(block)
        elif kind == "declares-huge":
            self._headers(200, 10**12)
        elif kind == "gzip-bomb":  # 64 MB of zeros, gzipped to ~64 KB, sent whatever was asked
            body = gzip.compress(b"\0" * (64 << 20))
            self._send(200, body, {"Content-Encoding": "gzip"})
        elif kind == "redirect":  # /redirect/<key>?<absolute or relative target>
            self._send(302, b"", {"Location": self.path.split("?", 1)[1]})
        elif kind == "loop":
            self._send(302, b"", {"Location": self.path})
        else:
            self._send(404, b"unknown")

    def _headers(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self._headers(status, len(body), extra)
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up on the hostile handlers on purpose


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def _url(base: str, kind: str, suffix: str = "") -> tuple[str, str]:
    path = f"/{kind}/{uuid.uuid4().hex}{suffix}"
    return base + path, path


def _fetch(url: str, policy: FetchPolicy = FAST, **kwargs: object) -> bytes:
    message = ModelMessage(name="m", version="1", location=url, sha256=sha256_of(ARTIFACT))
    return fetch_artifact(message, policy, **kwargs)  # type: ignore[arg-type]


def _rejected(url: str, policy: FetchPolicy = FAST) -> tuple[errors.ModelRejected, float]:
    started = time.monotonic()
    with pytest.raises(errors.ModelRejected) as info:
        _fetch(url, policy)
    assert info.value.detail
    return info.value, time.monotonic() - started


def test_ok(base: str) -> None:
    url, path = _url(base, "ok")
    assert _fetch(url) == ARTIFACT
    assert _Handler.hits[path] == 1


# --- the whole-fetch deadline and the size cap -----------------------------------------


def test_a_dripping_server_is_cut_at_the_deadline(base: str) -> None:
    url, _ = _url(base, "drip")
    error, took = _rejected(url, FetchPolicy(timeout=1.0, attempts=2))
    assert error.reason == "fetch_timeout"
    assert error.transient
    # each byte arrives well within the idle timeout; uncut, the drip would last over an hour
    assert 1.0 <= took < 10, took


def test_a_huge_body_without_content_length_is_cut_at_the_cap(base: str) -> None:
    url, path = _url(base, "endless")
    limit = 8_000_000
    tracemalloc.start()
    try:
        error, _ = _rejected(url, FetchPolicy(max_bytes=limit, attempts=3))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "artifact_too_large"
    # the cap plus a fixed ~2 MB (the client's TLS context, a chunk): never a second copy
    assert peak < limit + 4_000_000, peak
    assert _Handler.hits[path] == 1  # too large is final: not retried


def test_a_declared_length_over_the_cap_is_refused_before_reading(base: str) -> None:
    url, path = _url(base, "declares-huge")
    error, took = _rejected(url)
    assert error.reason == "artifact_too_large"
    assert took < FAST.timeout / 2  # refused, not waited for
    assert _Handler.hits[path] == 1


def test_content_encoding_is_never_decoded(base: str) -> None:
    url, _ = _url(base, "gzip-bomb")
    error, _ = _rejected(url, FetchPolicy(max_bytes=1_000_000))
    assert error.reason == "sha256_mismatch"  # the raw 64 KB, not 64 MB of zeros


# --- transient failures: retried with backoff, within the deadline ----------------------


def test_5xx_then_200_is_retried_until_it_works(base: str) -> None:
    url, path = _url(base, "flaky")
    assert _fetch(url) == ARTIFACT
    assert _Handler.hits[path] == 3


def test_a_stalled_connection_is_dropped_and_retried(base: str) -> None:
    url, path = _url(base, "stall1")
    started = time.monotonic()
    assert _fetch(url, FetchPolicy(timeout=4.0, attempts=4, backoff=0.05)) == ARTIFACT
    # the idle timeout (4 s / 4 attempts) cut the stall; waiting it out would miss the deadline
    assert 1.0 <= time.monotonic() - started < 4.0
    assert _Handler.hits[path] == 2


def test_a_reset_connection_is_retried(base: str) -> None:
    url, path = _url(base, "reset1")
    assert _fetch(url) == ARTIFACT
    assert _Handler.hits[path] == 2


@pytest.mark.parametrize("kind", ["503", "429"])
def test_a_server_that_stays_unavailable_is_rejected_as_transient(base: str, kind: str) -> None:
    url, path = _url(base, kind)
    error, took = _rejected(url)
    assert (error.reason, error.transient) == ("fetch_transient", True)
    assert f"HTTP {kind}" in error.detail
    assert _Handler.hits[path] == FAST.attempts
    assert took < FAST.timeout / 2  # the attempts ran out, well before the deadline


def test_retries_stop_at_the_deadline(base: str) -> None:
    url, path = _url(base, "503")
    policy = FetchPolicy(timeout=3.0, attempts=100, backoff=0.2)
    error, took = _rejected(url, policy)
    # the last 503 (fetch_transient), or the deadline in the middle of an attempt on a slow
    # machine (fetch_timeout): either way a transient rejection, given at the deadline
    assert error.reason in {"fetch_transient", "fetch_timeout"}, error
    assert error.transient
    assert took < 3.0 + 3  # 100 attempts with doubling backoff would take minutes
    assert 2 <= _Handler.hits[path] < 10  # 0.1-0.2, 0.2-0.4, 0.4-0.8, 0.8-1.6 s apart


def test_connection_refused_is_retried_then_rejected_as_transient() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error, took = _rejected(f"http://127.0.0.1:{port}/m.onnx")
    assert error.reason == "fetch_transient"
    assert "3 time(s)" in error.detail
    assert "ConnectError" in error.detail
    assert took < FAST.timeout / 2  # the attempts ran out, well before the deadline


# --- permanent failures: never retried -----------------------------------------------


@pytest.mark.parametrize("kind", ["404", "403"])
def test_client_errors_are_final(base: str, kind: str) -> None:
    url, path = _url(base, kind)
    error, _ = _rejected(url)
    assert (error.reason, error.transient) == ("fetch_failed", False)
    assert f"HTTP {kind}" in error.detail
    assert _Handler.hits[path] == 1


def test_sha256_mismatch_is_final(base: str) -> None:
    url, path = _url(base, "ok")
    message = ModelMessage(name="m", version="1", location=url, sha256="0" * 64)
    with pytest.raises(errors.ChecksumMismatch):
        fetch_artifact(message, FAST)
    assert _Handler.hits[path] == 1


# --- redirects ------------------------------------------------------------------------


def test_a_redirect_within_http_is_followed(base: str) -> None:
    target, _ = _url(base, "ok")
    url, _ = _url(base, "redirect", "?" + target.removeprefix(base))
    assert _fetch(url) == ARTIFACT


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/m.onnx"])
def test_a_redirect_to_another_scheme_is_refused(base: str, target: str) -> None:
    url, path = _url(base, "redirect", "?" + target)
    error, _ = _rejected(url)
    assert error.reason == "redirect_refused"
    assert _Handler.hits[path] == 1


def test_redirects_are_capped(base: str) -> None:
    url, path = _url(base, "loop")
    error, _ = _rejected(url, FetchPolicy(max_redirects=3))
    assert error.reason == "redirect_refused"
    assert _Handler.hits[path] == 4


@pytest.mark.parametrize(
    ("current", "location", "allowed"),
    [
        ("http://a/m", "https://b/m", True),  # an upgrade
        ("https://a/m", "/n", True),
        ("https://a/m", "http://a/m", False),  # a downgrade
        ("https://a/m", "file:///etc/passwd", False),
    ],
)
def test_redirect_schemes(current: str, location: str, allowed: bool) -> None:
    response = httpx.Response(302, headers={"Location": location})
    if allowed:
        assert _redirect_target(response, httpx.URL(current)).scheme in {"http", "https"}
    else:
        with pytest.raises(errors.RedirectRefused):
            _redirect_target(response, httpx.URL(current))


# --- threads, cancellation, the event loop -------------------------------------------------


def test_cancel_stops_a_fetch_at_once(base: str) -> None:
    url, _ = _url(base, "drip")
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(errors.FetchCancelled):
        _fetch(url, FetchPolicy(timeout=30), cancel=cancel)
    assert time.monotonic() - started < 10  # cancelled at 0.3 s, not cut at the 30 s deadline


def test_fetches_run_in_parallel_threads(base: str) -> None:
    urls = [_url(base, kind)[0] for kind in ["ok", "flaky", "ok", "reset1"]]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(_fetch, urls)) == [ARTIFACT] * 4


def test_a_fetch_in_a_thread_leaves_the_event_loop_free(base: str) -> None:
    url, _ = _url(base, "drip")

    async def main() -> float:
        fetch = asyncio.ensure_future(asyncio.to_thread(_fetch, url, FetchPolicy(timeout=1.5)))
        gaps, last = [], time.monotonic()
        while not fetch.done():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        with pytest.raises(errors.FetchTimeout):
            await fetch
        return max(gaps)

    assert asyncio.run(main()) < 0.75  # a fetch on the loop would block it for 1.5 s
