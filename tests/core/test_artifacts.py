"""Inline and file:// artifacts: the cap, the checksum, the roots, regular files only.

http(s):// locations are in ``test_artifacts_http.py``.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from service.core import errors
from service.core.artifacts import FetchPolicy, fetch_artifact, sha256_hex
from service.core.messages import ModelMessage
from service.core.registry import BuildLimits
from service.core.settings import Settings
from tests.models import sha256_of

ARTIFACT = bytes(range(256)) * 40  # 10240 bytes, any content will do: nothing is loaded here
LIMIT = 1_000_000


def _message(
    *, data: bytes | None = None, location: str | None = None, sha256: str | None = None
) -> ModelMessage:
    return ModelMessage(
        name="wine",
        version="1",
        data=base64.b64encode(data).decode() if data is not None else None,
        location=location,
        sha256=sha256 or sha256_of(ARTIFACT),
    )


DEADLINE = 40.0  # never reached by a passing test, however loaded the machine


def _fetch(message: ModelMessage, *, limit: int = LIMIT, roots: tuple[Path, ...] = ()) -> bytes:
    return fetch_artifact(message, FetchPolicy(max_bytes=limit, timeout=DEADLINE, roots=roots))


def _refused(location: str, roots: tuple[Path, ...], **kwargs: int) -> errors.ModelRejected:
    started = time.monotonic()
    with pytest.raises(errors.ModelRejected) as info:
        _fetch(_message(location=location), roots=roots, **kwargs)
    assert time.monotonic() - started < DEADLINE / 2, "a refusal must not read first"
    assert info.value.detail
    return info.value


@pytest.fixture
def root(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    return models


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --- inline --------------------------------------------------------------------


def test_inline_ok() -> None:
    assert _fetch(_message(data=ARTIFACT)) == ARTIFACT


def test_inline_uppercase_digest_ok() -> None:
    assert _fetch(_message(data=ARTIFACT, sha256=sha256_of(ARTIFACT).upper())) == ARTIFACT


def test_inline_sha256_mismatch() -> None:
    with pytest.raises(errors.ChecksumMismatch) as info:
        _fetch(_message(data=ARTIFACT + b"x"))
    assert info.value.reason == "sha256_mismatch"


@pytest.mark.parametrize("data", ["not base64!!", "AAA", "AA=A", "YWJj\n", "é"])
def test_inline_invalid_base64(data: str) -> None:
    message = ModelMessage(name="wine", version="1", data=data, sha256=sha256_of(b""))
    with pytest.raises(errors.InvalidBase64) as info:
        _fetch(message)
    assert info.value.reason == "invalid_base64"


def test_inline_over_limit() -> None:
    with pytest.raises(errors.ArtifactTooLarge) as info:
        _fetch(_message(data=ARTIFACT), limit=len(ARTIFACT) - 1)
    assert info.value.reason == "artifact_too_large"


@pytest.mark.parametrize("size", [300, 301, 302])
def test_inline_exactly_at_limit_is_accepted(size: int) -> None:
    # "Larger artifacts are rejected": one of exactly `limit` bytes is not larger,
    # whatever base64 padding it needs (300 needs none, 301 and 302 do).
    data = ARTIFACT[:size]
    message = _message(data=data, sha256=sha256_of(data))
    assert _fetch(message, limit=size) == data


# --- file:// under the roots ------------------------------------------------------


def test_file_location_ok(root: Path) -> None:
    path = root / "model dir" / "m.onnx"
    path.parent.mkdir()
    path.write_bytes(ARTIFACT)
    assert _fetch(_message(location=path.as_uri()), roots=(root,)) == ARTIFACT
    exact = _fetch(_message(location=path.as_uri()), roots=(root,), limit=len(ARTIFACT))
    assert exact == ARTIFACT


def test_a_root_may_be_a_symlink_and_one_of_several(root: Path, tmp_path: Path) -> None:
    (root / "m.onnx").write_bytes(ARTIFACT)
    link = tmp_path / "link-to-models"
    link.symlink_to(root)
    location = (link / "m.onnx").as_uri()
    assert _fetch(_message(location=location), roots=(tmp_path / "other", link)) == ARTIFACT


def test_file_location_missing(root: Path) -> None:
    error = _refused((root / "absent.onnx").as_uri(), (root,))
    assert (error.reason, error.transient) == ("fetch_failed", False)


def test_file_location_over_limit(root: Path) -> None:
    path = root / "m.onnx"
    path.write_bytes(ARTIFACT)
    assert _refused(path.as_uri(), (root,), limit=len(ARTIFACT) - 1).reason == "artifact_too_large"


def test_a_sparse_file_is_read_only_up_to_the_cap(root: Path) -> None:
    path = root / "sparse.onnx"
    with path.open("wb") as file:
        file.truncate(10**10)  # 10 GB that take no disk
    tracemalloc.start()
    try:
        error = _refused(path.as_uri(), (root,), limit=2_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason == "artifact_too_large"
    assert peak < 3_000_000, peak


def test_file_location_sha256_mismatch(root: Path) -> None:
    path = root / "m.onnx"
    path.write_bytes(ARTIFACT[:-1])
    with pytest.raises(errors.ChecksumMismatch):
        _fetch(_message(location=path.as_uri()), roots=(root,))


# --- file:// refusals ----------------------------------------------------------------


def test_outside_the_roots(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.onnx"
    path.write_bytes(ARTIFACT)
    assert _refused(path.as_uri(), (root,)).reason == "location_outside_roots"
    absent = (tmp_path / "absent.onnx").as_uri()  # no oracle for what exists outside
    assert _refused(absent, (root,)).reason == "location_outside_roots"


def test_no_roots_means_no_file_locations(root: Path) -> None:
    path = root / "m.onnx"
    path.write_bytes(ARTIFACT)
    assert _refused(path.as_uri(), ()).reason == "location_outside_roots"


def test_dot_dot_escape(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.onnx").write_bytes(ARTIFACT)
    location = f"file://{root}/../secret.onnx"
    assert _refused(location, (root,)).reason == "location_outside_roots"


def test_symlink_escape(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.onnx").write_bytes(ARTIFACT)
    (root / "innocent.onnx").symlink_to(tmp_path / "secret.onnx")
    (root / "dir").symlink_to(tmp_path)
    assert _refused((root / "innocent.onnx").as_uri(), (root,)).reason == "location_outside_roots"
    location = (root / "dir" / "secret.onnx").as_uri()
    assert _refused(location, (root,)).reason == "location_outside_roots"


def test_dev_zero_outside_the_roots(root: Path) -> None:
    assert _refused("file:///dev/zero", (root,)).reason == "location_outside_roots"
    (root / "zero.onnx").symlink_to("/dev/zero")
    assert _refused((root / "zero.onnx").as_uri(), (root,)).reason == "location_outside_roots"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused_even_under_a_root(device: str) -> None:
    error = _refused(f"file://{device}", (Path("/dev"),))
    assert error.reason == "not_a_regular_file"


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_waiting_for_a_writer(root: Path) -> None:
    fifo = root / "pipe.onnx"
    os.mkfifo(fifo)
    assert _refused(fifo.as_uri(), (root,)).reason == "not_a_regular_file"


def test_a_directory_is_refused(root: Path) -> None:
    assert _refused(root.as_uri(), (root,)).reason == "not_a_regular_file"


@pytest.mark.parametrize("location", ["file://fileserver/models/m.onnx", "file://10.0.0.1/m"])
def test_a_file_url_with_a_host_is_refused(location: str, root: Path) -> None:
    assert _refused(location, (root,)).reason == "location_refused"


@pytest.mark.parametrize("location", ["ftp://example.com/m.onnx", "/tmp/m.onnx", "m.onnx"])
def test_unsupported_scheme(location: str) -> None:
    error = _refused(location, ())
    assert error.reason == "location_refused"
    assert "not supported" in error.detail


def test_a_cancelled_fetch_reads_nothing(root: Path) -> None:
    path = root / "m.onnx"
    path.write_bytes(ARTIFACT)
    cancel = threading.Event()
    cancel.set()
    policy = FetchPolicy(roots=(root,))
    with pytest.raises(errors.FetchCancelled):
        fetch_artifact(_message(location=path.as_uri()), policy, cancel=cancel)


# --- settings ---------------------------------------------------------------------


def test_settings_become_the_fetch_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HOTSWAP_"):
            monkeypatch.delenv(name)
    settings = Settings(data_dir=str(tmp_path))
    assert settings.model_root_paths == (tmp_path / "models",)  # the default: one directory
    assert BuildLimits.from_settings(settings).fetch_policy() == FetchPolicy(
        max_bytes=200_000_000, timeout=15.0, roots=(tmp_path / "models",), attempts=4, backoff=0.5
    )
    monkeypatch.setenv("HOTSWAP_MODEL_ROOTS", f"/srv/models{os.pathsep} /mnt/shared ")
    monkeypatch.setenv("HOTSWAP_FETCH_ATTEMPTS", "2")
    monkeypatch.setenv("HOTSWAP_FETCH_BACKOFF", "0.25")
    monkeypatch.setenv("HOTSWAP_FETCH_TIMEOUT", "7")
    policy = BuildLimits.from_settings(Settings()).fetch_policy()
    assert policy.roots == (Path("/srv/models"), Path("/mnt/shared"))
    assert (policy.attempts, policy.backoff, policy.timeout) == (2, 0.25, 7.0)
