"""Hostile model locations against a running worker on a real broker (README: Bad input).

Each location is published by reference with the sha256 of a good model, so
only the location itself can be the reason of a rejection. Measured here:
the time from publishing to the rejection in ``GET /models/wine/history``,
the worker's peak RSS (VmHWM), and that the old version keeps serving until a
later good version, by reference under the model root, is accepted.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from scripts.harness import WorkerProcess, consume, send_raw, wait_for
from service.core.messages import encode_model_message
from service.tools.publish import PublishRequest, build_message
from tests.brokers import WineWorker

pytestmark = pytest.mark.integration

DEADLINE = 3.0  # HOTSWAP_FETCH_TIMEOUT of the worker under test
# What a rejection may take beyond the deadline (the topic round trip, a loaded machine); the
# hostile sources would otherwise hold a fetch for ever (FIFO, drip) or for minutes (10 GB).
SLACK = 20.0
# HOTSWAP_MAX_MODEL_BYTES: a few times the good artifact. An endless body reaches it in
# ~0.1 s here; at 20 MB a loaded CI machine once hit DEADLINE first (fetch_timeout).
LIMIT = 4_000_000
ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


class _Hostile(BaseHTTPRequestHandler):
    hits: Counter[str] = Counter()
    stop = threading.Event()

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        if self.path == "/drip":  # declares a small model, sends one byte a second
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not self.stop.wait(1.0):
                self.wfile.write(b"x")
                self.wfile.flush()
        elif self.path == "/endless":  # no Content-Length, zeros until the client hangs up
            self.send_response(200)
            self.end_headers()
            block = b"\0" * 65536
            while not self.stop.is_set():
                self.wfile.write(block)
        elif self.path == "/to-dev-zero":
            self.send_response(302)
            self.send_header("Location", "file:///dev/zero")
            self.end_headers()
        else:  # /busy: a server that stays down
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the worker hangs up on these handlers on purpose


@pytest.fixture
def hostile() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Hostile.stop.set()
    server.shutdown()
    server.server_close()


def _peak_rss_mb(worker: WorkerProcess) -> float:
    assert worker.proc is not None
    status = Path(f"/proc/{worker.proc.pid}/status").read_text()
    [line] = [x for x in status.splitlines() if x.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


def _by_reference(version: str, location: str, artifact: bytes) -> bytes:
    doc = {
        "name": "wine",
        "version": version,
        "format": "onnx",
        "location": location,
        "sha256": hashlib.sha256(artifact).hexdigest(),
    }
    return orjson.dumps(doc)


def _rejection(worker: WorkerProcess, version: str) -> dict[str, str] | None:
    for entry in worker.get("/models/wine/history").json():
        if entry["version"] == version and entry["status"] == "rejected":
            return dict(entry)
    return None


def test_hostile_locations_are_rejected_in_time_and_memory_and_a_later_version_serves(
    wine_worker: WineWorker, trained: dict[str, Path], hostile: str, tmp_path: Path
) -> None:
    settings, worker = wine_worker(
        fetch_timeout=DEADLINE, max_model_bytes=LIMIT, fetch_attempts=3, fetch_backoff=0.2
    )
    [root] = settings.model_root_paths  # the default: DATA_DIR/models
    root.mkdir(parents=True, exist_ok=True)
    good = build_message(PublishRequest(trained["wine-forest"], "wine", "good", store_dir=root))
    artifact = base64.b64decode(
        build_message(PublishRequest(trained["wine-forest"], "wine", "x")).data or ""
    )
    (root / "zero.onnx").symlink_to("/dev/zero")
    os.mkfifo(root / "pipe.onnx")
    with (root / "sparse.onnx").open("wb") as sparse:
        sparse.truncate(10**10)  # a 10 GB regular file that takes no disk
    (tmp_path / "secret.onnx").write_bytes(artifact)
    rss_before = _peak_rss_mb(worker)

    cases = [  # (version, location, reason, most seconds from publish to rejection)
        ("dev-zero", "file:///dev/zero", "location_outside_roots", SLACK),
        ("link-to-dev-zero", (root / "zero.onnx").as_uri(), "location_outside_roots", SLACK),
        (
            "escape",
            f"file://{root}/../../{tmp_path.name}/secret.onnx",
            "location_outside_roots",
            SLACK,
        ),
        ("fifo", (root / "pipe.onnx").as_uri(), "not_a_regular_file", SLACK),
        ("sparse-10gb", (root / "sparse.onnx").as_uri(), "artifact_too_large", SLACK),
        ("drip", f"{hostile}/drip", "fetch_timeout", DEADLINE + SLACK),
        ("endless", f"{hostile}/endless", "artifact_too_large", DEADLINE + SLACK),
        ("redirect", f"{hostile}/to-dev-zero", "redirect_refused", SLACK),
        ("busy", f"{hostile}/busy", "fetch_transient", DEADLINE + SLACK),
    ]
    took: dict[str, float] = {}
    for version, location, reason, most in cases:
        started = time.monotonic()
        send_raw(
            settings, settings.model_topic, [(b"wine", _by_reference(version, location, artifact))]
        )
        entry = wait_for(
            functools.partial(_rejection, worker, version), most + 5, f"{version} rejected"
        )
        took[version] = time.monotonic() - started
        assert (entry["reason"], entry["detail"] != "") == (reason, True), entry
        assert took[version] < most, f"{version} rejected after {took[version]:.1f}s"
        assert worker.model_version("wine") == "1", f"v1 stopped serving after {version}"
    assert _Hostile.hits["/busy"] == 3  # HOTSWAP_FETCH_ATTEMPTS, then given up
    assert _Hostile.hits["/endless"] == 1  # too large is final
    rss_after = _peak_rss_mb(worker)
    print(f"\ntime to reject (s): { {v: round(t, 2) for v, t in took.items()} }")
    print(f"peak RSS (MB): {rss_before:.0f} before, {rss_after:.0f} after (cap {LIMIT / 1e6:.0f})")
    assert rss_after - rss_before < LIMIT / 2**20 + 80, "memory grew beyond the cap"

    send_raw(
        settings,
        settings.data_topic,
        [(b"r1", orjson.dumps({"id": "r1", "features": ROW, "model": "wine"}))],
    )
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 1)
    assert scored[0].json()["version"] == "1"

    # The feed is not held up: a hostile location, then at once a good one.
    started = time.monotonic()
    send_raw(
        settings,
        settings.model_topic,
        [
            (b"wine", _by_reference("drip-again", f"{hostile}/drip", artifact)),
            (b"wine", encode_model_message(good)),
        ],
    )
    wait_for(lambda: worker.model_version("wine") == "good", DEADLINE + 10, "the later version")
    later = time.monotonic() - started
    print(f"later good version serving {later:.1f}s after publish (behind a dripping one)")
    assert later < DEADLINE + SLACK  # the drip alone would hold the feed for ever
    assert _rejection(worker, "drip-again") is not None
