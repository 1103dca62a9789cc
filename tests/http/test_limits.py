"""HTTP limits on a real uvicorn process: 413 before buffering, and /health fast under load."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import httpx
import numpy as np
import orjson

from service.core.messages import ModelMessage
from tests.http.conftest import Server, ServerFactory

LIMIT = 4 * 1024 * 1024
MiB = 1024 * 1024


def _head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(sock: socket.socket) -> tuple[int, bytes]:
    """Read the response until the server closes; its status and body."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # the server closed with our unread body in its buffer; the answer came first
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _declared(server: Server, length: int) -> tuple[int, bytes]:
    """Announce ``length`` bytes but send none: the answer must come without the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_head("/v2/models/wine/infer", **{"Content-Length": str(length)}))
        return _status(sock)


def _chunked(server: Server, total: int) -> tuple[int, bytes, int]:
    """Stream ``total`` bytes chunked (no Content-Length); status, body and bytes sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_head("/v2/models/wine/infer", **{"Transfer-Encoding": "chunked"}))

        def send() -> None:
            nonlocal sent
            chunk = b"7" * 65536
            try:
                while sent < total:
                    piece = chunk[: total - sent]
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    sent += len(piece)
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # refused and closed by the server: stop sending

        sender = threading.Thread(target=send)
        sender.start()
        status, body = _status(sock)
        sender.join(30)
    return status, body, sent


def test_bodies_over_the_limit_are_refused_before_buffering(
    serve: ServerFactory, wine_and_text: tuple[ModelMessage, ...]
) -> None:
    server = serve(*wine_and_text, max_request_bytes=LIMIT)
    row = {"name": "X", "shape": [1, 13], "datatype": "FP32", "data": [1.0] * 13}
    ok = httpx.post(f"{server.url}/v2/models/wine/infer", json={"inputs": [row]})
    assert ok.status_code == 200
    peak_before = server.status("VmHWM")

    for length in (LIMIT + 1, 1 << 30):  # Content-Length: refused on the headers alone
        status, body = _declared(server, length)
        assert status == 413
        assert f"limit of {LIMIT} bytes".encode() in body

    status, body, _ = _chunked(server, LIMIT + 1)  # chunked, one byte over
    assert status == 413, body
    status, body, sent = _chunked(server, 256 * MiB)  # chunked, far over: cut off early
    assert status == 413, body
    assert sent < 64 * MiB, f"the server read {sent} bytes before refusing"

    grown_mib = (server.status("VmHWM") - peak_before) / 1024
    assert grown_mib < 48, f"peak RSS grew {grown_mib:.0f} MiB for bodies refused at 4 MiB"
    assert httpx.post(f"{server.url}/v2/models/wine/infer", json={"inputs": [row]}).is_success
    assert server.process.poll() is None


def _ping(client: httpx.Client) -> float:
    started = time.perf_counter()
    assert client.get("/health").status_code == 200
    return time.perf_counter() - started


def test_health_stays_fast_while_a_large_request_is_scored(
    serve: ServerFactory, deep: ModelMessage
) -> None:
    server = serve(deep)  # the default limit, 16 MiB
    rows = np.random.default_rng(1).normal(size=(100_000, 13)).astype(np.float32)
    raw = rows.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    big, length = header + raw, str(len(header))
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(20):
            _ping(client)  # warm up the connection
        baseline = [_ping(client) for _ in range(200)]

        durations: list[float] = []

        def post_big() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as other:
                for _ in range(3):
                    started = time.perf_counter()
                    response = other.post(
                        "/v2/models/deep/infer",
                        content=big,
                        headers={"Inference-Header-Content-Length": length},
                    )
                    assert response.status_code == 200, response.text[:200]
                    durations.append(time.perf_counter() - started)

        worker = threading.Thread(target=post_big)
        worker.start()
        during = []
        while worker.is_alive():
            during.append(_ping(client))
            time.sleep(0.005)
        worker.join()

    assert len(durations) == 3
    busy, typical, scoring = max(during), statistics.median(baseline), min(durations)
    report = (
        f"/health: median {typical * 1000:.1f} ms unloaded; max {busy * 1000:.0f} ms over "
        f"{len(during)} calls while requests of {scoring * 1000:.0f} ms and more were scored"
    )
    assert len(during) >= 20, report
    # On the event loop, a /health call that arrives mid-request would wait for the rest of it.
    assert busy < scoring / 3, report
    assert statistics.median(during) < max(10 * typical, 0.02), report


def test_clients_that_send_their_bodies_slowly_hold_no_inference_place(
    serve: ServerFactory, wine_and_text: tuple[ModelMessage, ...]
) -> None:
    """More slow bodies than inference places (8): a whole request is still scored."""
    server = serve(*wine_and_text)
    row = {"name": "X", "shape": [1, 13], "datatype": "FP32", "data": [1.0] * 13}
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(12)]
    try:
        for sock in slow:  # headers and one byte of a 1,000-byte body, then nothing
            sock.sendall(_head("/v2/models/wine/infer", **{"Content-Length": "1000"}) + b"{")
        with httpx.Client(base_url=server.url, timeout=60) as client:
            # the slow bodies are being received once the server answers a request after them
            assert client.get("/health").status_code == 200
            response = client.post("/v2/models/wine/infer", json={"inputs": [row]})
        assert response.status_code == 200, response.text
    finally:
        for sock in slow:
            sock.close()
    assert server.process.poll() is None
