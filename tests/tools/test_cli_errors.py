"""A failing command says so in one line on stderr, says what to do, and exits non-zero.

Run as a user runs it (a subprocess), so library logs, warnings and
tracebacks would show up on stderr if anything let them through. Nothing here
needs a broker: the "unreachable" ones point at a port where nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.harness import REPO
from scripts.localkafka import free_port


def hotswap(
    *args: str, cwd: Path = REPO, more: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSWAP_")}
    env.update(more or {})
    env["HOTSWAP_BROKER"] = f"127.0.0.1:{free_port()}"  # nothing listens there
    env["HOTSWAP_HTTP_PORT"] = str(free_port())  # nor there
    env["HOTSWAP_LOG_LEVEL"] = "DEBUG"  # the CLI's output must not depend on it
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("rollback", "wine"),
        ("rollback", "wine", "--to", "1"),
        ("replay-dlq", "--dry-run"),
        ("produce", "--count", "1"),
    ],
)
def test_unreachable_broker(args: tuple[str, ...]) -> None:
    line = one_error_line(hotswap(*args))
    assert line.startswith("error: cannot reach the Kafka broker at 127.0.0.1:")
    assert "HOTSWAP_BROKER" in line


def test_unreachable_broker_when_publishing(trained: dict[str, Path]) -> None:
    line = one_error_line(
        hotswap("publish", str(trained["wine-logreg"]), "--name", "wine", "--version", "1")
    )
    assert line.startswith("error: cannot reach the Kafka broker")


@pytest.mark.parametrize(
    "args", [("status", "--url"), ("status", "--json", "--url"), ("rollback", "wine", "--url")]
)
def test_unreachable_worker(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(hotswap(*args, url))
    assert line.startswith(f"error: cannot reach the worker at {url}")
    assert "hotswap worker" in line
    assert "--url" in line


def test_unreachable_worker_at_the_default_url() -> None:
    line = one_error_line(hotswap("status"))
    assert "cannot reach the worker at http://localhost:" in line


def test_missing_files(tmp_path: Path, trained: dict[str, Path]) -> None:
    model = str(trained["wine-logreg"])
    missing = tmp_path / "missing"
    cases = {
        ("publish", str(missing), "--name", "w", "--version", "1"): "model file",
        ("publish", model, "--name", "w", "--version", "1", "--metadata", f"@{missing}"): (
            "metadata file"
        ),
        ("publish", model, "--name", "w", "--version", "1", "--signing-key", str(missing)): (
            "signing key"
        ),
    }
    for args, what in cases.items():
        line = one_error_line(hotswap(*args))
        assert line == f"error: {what} {missing} does not exist: check the path"


def test_bad_metadata_json(trained: dict[str, Path], tmp_path: Path) -> None:
    model = str(trained["wine-logreg"])
    bad = tmp_path / "meta.json"
    bad.write_text("{'owner': 1}")
    for metadata in ("{not json", f"@{bad}"):
        line = one_error_line(
            hotswap("publish", model, "--name", "w", "--version", "1", "--metadata", metadata)
        )
        assert line.startswith("error: --metadata is not valid JSON")
        assert "give an object" in line
    line = one_error_line(
        hotswap("publish", model, "--name", "w", "--version", "1", "--metadata", "[1, 2]")
    )
    assert line == "error: --metadata must be a JSON object, not list"


def test_not_a_signing_key(trained: dict[str, Path], tmp_path: Path) -> None:
    key = tmp_path / "not-a.key"
    key.write_text("hello")
    line = one_error_line(
        hotswap(
            "publish", str(trained["wine-logreg"]), "--name", "w", "--version", "1",
            "--signing-key", str(key),
        )
    )  # fmt: skip
    assert line.startswith(f"error: {key} is not an Ed25519 private key")
    assert "hotswap keygen" in line


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "publisher.key"
    first = hotswap("keygen", str(key))
    assert first.returncode == 0, first.stderr
    line = one_error_line(hotswap("keygen", str(key)))
    assert line == f"error: {key} exists: pass --force to replace it, or choose another path"


def test_unknown_train_kind(tmp_path: Path) -> None:
    line = one_error_line(hotswap("train", "--kind", "nope", "--out", str(tmp_path)))
    assert line.startswith("error: unknown kind nope: choose from wine-logreg")


def test_bad_setting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSWAP_")}
    env["HOTSWAP_HTTP_PORT"] = "eighty"
    result = subprocess.run(
        [sys.executable, "-m", "service", "status"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert one_error_line(result).startswith("error: bad setting HOTSWAP_HTTP_PORT:")


@pytest.mark.parametrize("args", [(), ("status", "--bogus"), ("publish", "model.onnx")])
def test_usage_mistakes(args: tuple[str, ...]) -> None:
    line = one_error_line(hotswap(*args), code=2)
    assert "error:" in line
    assert "--help" in line


def test_unsafe_version_labels_and_unsigned_rollout_steps(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    model = str(trained["wine-logreg"])
    line = one_error_line(hotswap("publish", model, "--name", "w", "--version", "a/b"))
    assert line.startswith("error: version 'a/b' is not a valid label: use letters, digits")
    verifying = {"HOTSWAP_VERIFY_KEY": str(tmp_path / "publisher.key.pub")}
    for command in ("promote", "abort"):
        line = one_error_line(hotswap(command, "wine", more=verifying))
        assert "HOTSWAP_VERIFY_KEY is set" in line
        assert "--signing-key" in line


@pytest.mark.parametrize("verbose", [False, True])
def test_client_library_logs_show_only_with_verbose(verbose: bool) -> None:
    """A command's clients log what they retry (librdkafka: a connection dropped during SASL
    authentication, seen in a refused `promote`): on stderr with --verbose only, so a
    failing command still says one line."""
    code = (
        "import logging\n"
        "from service.cli import _quiet_logging\n"
        f"_quiet_logging({verbose})\n"
        "for name in ('librdkafka', 'aiokafka', 'confluent_kafka'):\n"
        "    logging.getLogger(name).error('FAIL %s: transport failure', name)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSWAP_")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stderr.splitlines() if "transport failure" in line]
    assert len(shown) == (3 if verbose else 0), result.stderr
