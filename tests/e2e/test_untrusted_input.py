"""Every malformed record and model, on a real broker: a reason for each, nothing lost.

The tables here are the ones in the README's "Bad input" section.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from scripts.harness import consume, publish_file, send_raw, wait_for
from service.core.messages import HEADER_ERROR, HEADER_REASON
from tests.brokers import WineWorker
from tests.onnxgraphs import endless_for_ones

pytestmark = pytest.mark.integration

WINE_NAMES = [
    "alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
    "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
    "od280/od315_of_diluted_wines", "proline",
]  # fmt: skip
ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


def _record(rid: str, features: object, model: object = "wine") -> bytes:
    return orjson.dumps({"id": rid, "model": model, "features": features})


BAD_RECORDS: list[tuple[str, bytes | None]] = [
    ("empty_value", b""),
    ("null_value", None),
    ("invalid_utf8", b'{"id": "\xff\xfe", "model": "wine"}'),
    ("invalid_json", b'{"id": 1, "model": "wine", "features": [1, 2'),
    ("not_an_object", b"[1, 2, 3]"),
    ("missing_features", orjson.dumps({"id": "m", "model": "wine"})),
    ("wrong_feature_count", _record("w", ROW[:5])),
    ("missing_feature", _record("mf", dict(zip(WINE_NAMES[:-1], ROW[:-1])))),
    ("unknown_feature", _record("uf", {**dict(zip(WINE_NAMES, ROW)), "colour": 1.0})),
    ("non_numeric", _record("nn", [*ROW[:-1], "1050"])),
    ("non_finite", b'{"id": "nan", "model": "wine", "features": [' + b"NaN, " * 12 + b"1]}"),
    ("non_finite", b'{"id": "inf", "model": "wine", "features": [' + b"1e400, " * 12 + b"1]}"),
    ("non_finite", _record("f32", [3.5e38, *ROW[1:]])),  # finite, beyond the model's float32
    ("scoring_failed", _record("x", ROW).replace(b'"x"', b'"\\ud800"')),  # an id not writable
    ("scoring_failed", _record("x", ROW).replace(b'"x"', b"[" * 300 + b"]" * 300)),
    ("record_too_large", _record("big", ROW) + b" " * 5000),
    ("unknown_model", _record("u", ROW, model="no-such-model")),
    ("missing_model", orjson.dumps({"id": "nm", "features": ROW})),
]


def test_every_bad_record_is_dead_lettered_with_its_reason_and_every_good_one_scored(
    wine_worker: WineWorker,
    trained: dict[str, Path],
) -> None:
    settings, worker = wine_worker(max_record_bytes=4096)
    items: list[tuple[bytes | None, bytes | None]] = []
    for i, (_, value) in enumerate(BAD_RECORDS):
        items.append((f"good-{i}".encode(), _record(f"good-{i}", ROW)))
        items.append((f"named-{i}".encode(), _record(f"named-{i}", dict(zip(WINE_NAMES, ROW)))))
        items.append((f"bad-{i}".encode(), value))
    send_raw(settings, settings.data_topic, items)

    dead = consume(
        settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= len(BAD_RECORDS)
    )
    got = sorted((r.key or b"").decode() + ":" + r.headers[HEADER_REASON].decode() for r in dead)
    want = sorted(f"bad-{i}:{reason}" for i, (reason, _) in enumerate(BAD_RECORDS))
    assert got == want
    originals = {f"bad-{i}".encode(): value for i, (_, value) in enumerate(BAD_RECORDS)}
    assert all(r.value == originals[r.key or b""] for r in dead), "dead letters must be untouched"

    good = 2 * len(BAD_RECORDS)
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= good)
    assert sorted(r.json()["id"] for r in scored) == sorted(
        [f"good-{i}" for i in range(len(BAD_RECORDS))]
        + [f"named-{i}" for i in range(len(BAD_RECORDS))]
    )
    assert len({r.json()["label"] for r in scored}) == 1, "named and positional rows must agree"
    assert worker.get("/ready").status_code == 200
    assert worker.proc is not None
    assert worker.proc.poll() is None


class _Evil:
    """Unpickling this would create a file: proof that nothing is ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _message(version: str, artifact: bytes, **changes: object) -> bytes:
    doc: dict[str, object] = {
        "name": "wine",
        "version": version,
        "format": "onnx",
        "data": base64.b64encode(artifact).decode(),
        "sha256": hashlib.sha256(artifact).hexdigest(),
    }
    doc.update(changes)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


@pytest.fixture
def slow_server() -> Iterator[str]:
    """An HTTP server that answers after 5 s: a model location that times out."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(5)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/model.onnx"
    server.shutdown()


def test_every_bad_model_is_rejected_with_its_reason_and_v1_keeps_serving(
    wine_worker: WineWorker,
    trained: dict[str, Path],
    tmp_path: Path,
    slow_server: str,
) -> None:
    settings, worker = wine_worker(max_model_bytes=100_000, fetch_timeout=1.0)
    [root] = settings.model_root_paths  # file:// locations are allowed only under it

    from sklearn.linear_model import LogisticRegression

    from service.core.convert import sklearn_to_onnx
    from service.tools.publish import PublishRequest, build_message

    narrow = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [0.5, 0.2]], [0, 1, 0])
    narrow_onnx = sklearn_to_onnx(narrow).onnx
    good = build_message(PublishRequest(trained["wine-tree"], "wine", "x"))
    good_onnx = base64.b64decode(good.data or "")
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(marker))
    cases: list[tuple[str, str, bytes | None]] = [
        ("invalid_message", "?", b"\x00\x01 garbage, not even JSON"),
        ("invalid_message", "3", orjson.dumps({"name": "wine", "version": "3"})),
        ("unsupported_format", "4", _message("4", good_onnx, format="pmml")),
        ("invalid_base64", "5", _message("5", good_onnx, data="@@not base64@@")),
        ("sha256_mismatch", "6", _message("6", good_onnx, sha256="ab" * 32)),
        ("invalid_onnx", "7", _message("7", b"\x08\x07 this is not a protobuf of a model")),
        ("incompatible_inputs", "8", _message("8", narrow_onnx)),
        (
            "warmup_failed",
            "9",
            _message("9", good_onnx, metadata={"samples": {"inputs": [ROW], "labels": [2]}}),
        ),
        ("pickle_refused", "10", _message("10", evil)),
        ("unsupported_format", "11", _message("11", evil, format="pickle")),
        ("unsupported_format", "12", _message("12", evil, format="joblib")),
        ("artifact_too_large", "13", _message("13", b"\x00" * 150_000)),
        (
            "fetch_failed",
            "14",
            _message("14", good_onnx, data=None, location=(root / "nope.onnx").resolve().as_uri()),
        ),
        ("fetch_timeout", "15", _message("15", good_onnx, data=None, location=slow_server)),
        (
            "incompatible_inputs",
            "17",
            _message("17", good_onnx, metadata={"feature_names": [0] * 13}),
        ),
    ]
    send_raw(settings, settings.model_topic, [(b"wine", value) for _, _, value in cases])

    def all_rejected() -> list[dict[str, str]] | None:
        rejected = [
            h for h in worker.get("/models/wine/history").json() if h["status"] == "rejected"
        ]
        return rejected if len(rejected) >= len(cases) else None

    rejected = wait_for(all_rejected, 30, "every bad model rejected")
    assert [(h["reason"], h["version"]) for h in rejected] == [(r, v) for r, v, _ in cases]
    assert all(h["detail"] for h in rejected)
    assert not marker.exists(), "a pickle was unpickled"
    assert worker.model_version("wine") == "1"
    assert (
        worker.metric('hotswap_model_rejections_total{model="wine",reason="pickle_refused"}') == 1
    )

    send_raw(settings, settings.data_topic, [(b"r", _record("r", ROW))])
    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 1)
    assert scored[0].json()["version"] == "1"

    publish_file(settings, trained["wine-forest"], "wine", "16")
    wait_for(lambda: worker.model_version("wine") == "16", 60, "a later good version")
    send_raw(settings, settings.model_topic, [(b"wine", None)])
    wait_for(lambda: worker.get("/models/wine").status_code == 404, 60, "tombstone unloads")
    assert worker.get("/models/wine/history").json()[-1]["status"] == "removed"


def test_a_record_that_makes_a_model_run_for_ever_is_dead_lettered_and_the_stream_goes_on(
    wine_worker: WineWorker, tmp_path: Path
) -> None:
    """A model that warmed up fine (zeros: no turn of its loop) meets a record holding a 1
    (10^12 turns): that run is stopped after HOTSWAP_SCORE_TIMEOUT, the record alone is
    dead-lettered, the records before and after it, of this model and another, are scored."""
    settings, worker = wine_worker(score_timeout=15.0)  # a good run meets it on any machine
    artifact = tmp_path / "endless.onnx"
    artifact.write_bytes(endless_for_ones())
    publish_file(settings, artifact, "endless", "1")
    wait_for(lambda: worker.model_version("endless") == "1", 60, "the endless model served")

    items: list[tuple[bytes | None, bytes | None]] = []
    for i in range(20):
        items.append((b"e%d" % i, _record(f"e{i}", [1.0 if i == 7 else 0.0, 0.0], "endless")))
        items.append((b"w%d" % i, _record(f"w{i}", ROW)))
    send_raw(settings, settings.data_topic, items)

    scored = consume(settings, settings.scored_topic, until=lambda rs: len(rs) >= 39)
    dead = consume(settings, settings.dead_letter_topic, until=lambda rs: len(rs) >= 1)
    assert [(r.key, r.headers[HEADER_REASON]) for r in dead] == [(b"e7", b"scoring_failed")]
    assert "stopped after 15 s" in dead[0].headers[HEADER_ERROR].decode()
    assert sorted(r.key or b"" for r in scored) == sorted(k or b"" for k, _ in items if k != b"e7")
    assert worker.get("/ready").status_code == 200
