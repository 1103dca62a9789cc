"""Fetch Apicurio Registry from Maven Central and run it as a real Schema Registry.

Why this exists: the tests, the demo and the benchmarks decode and write records in the
Confluent wire format (Avro, Protobuf, JSON Schema), which needs a real registry, not a
mock. Apicurio Registry 3.3.3 serves the Confluent API at ``/apis/ccompat/v7`` and its
runnable assembly is a Maven Central artifact (``io.apicurio:apicurio-registry-app``,
classifier ``all``, type ``tar.gz``); it needs Java >= 21 (the Temurin JDK under
``/usr/lib/jvm``, or ``$HOTSWAP_REGISTRY_JAVA``). Storage is in memory: a restart
forgets every schema. Stdlib only, like ``scripts/localkafka.py``.

Library use::

    with LocalRegistry(free_port()) as registry:
        ...  # registry.url == "http://127.0.0.1:<port>/apis/ccompat/v7"

Command line::

    python scripts/localregistry.py fetch               # prints the assembly's directory
    python scripts/localregistry.py run --port 8081     # until Ctrl-C / SIGTERM
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType, TracebackType

try:
    from scripts.localkafka import free_port
except ModuleNotFoundError:  # run as a script: scripts/ is on sys.path, not the repo
    from localkafka import free_port  # type: ignore[import-not-found,no-redef]

__all__ = ["APICURIO_VERSION", "LocalRegistry", "fetch", "java_21", "registry_home"]

APICURIO_VERSION = "3.3.3"
REPO = Path(__file__).resolve().parent.parent
_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
_JVM_OPTIONS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_JDKS = ("/usr/lib/jvm/temurin-25-jdk-amd64", "/usr/lib/jvm/temurin-21-jdk-amd64")


def registry_home() -> Path:
    """Where the assembly lives: ``$HOTSWAP_REGISTRY_HOME`` or ``.cache/apicurio-<version>``."""
    override = os.environ.get("HOTSWAP_REGISTRY_HOME")
    return Path(override) if override else REPO / ".cache" / f"apicurio-{APICURIO_VERSION}"


def java_21() -> str:
    """A ``java`` of version 21 or newer (Apicurio refuses 17: class file version 65)."""
    candidates = [os.environ.get("HOTSWAP_REGISTRY_JAVA", "")]
    candidates += [f"{jdk}/bin/java" for jdk in _JDKS]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "Apicurio Registry needs Java >= 21: install a JDK 21+ (e.g. Temurin 25 under "
        "/usr/lib/jvm) or set HOTSWAP_REGISTRY_JAVA to its java"
    )


def fetch(home: Path | None = None) -> Path:
    """Download and unpack the assembly once; return the folder holding ``quarkus-run.jar``.

    Idempotent and atomic like ``localkafka.fetch``: Maven and tar write into a temporary
    sibling that is renamed into place only when complete, so an interrupted or concurrent
    fetch never leaves a half-unpacked folder that later runs would take for a finished one.
    """
    home = Path(home) if home is not None else registry_home()
    if (home / "quarkus-run.jar").is_file():
        return home
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("`mvn` not found on PATH: it fetches Apicurio from Maven Central")
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
    print(f"fetching Apicurio Registry {APICURIO_VERSION} into {home} ...", file=sys.stderr)
    try:
        result = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={_ARTIFACT}",
             f"-DoutputDirectory={staging}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            cwd=staging,
        )  # fmt: skip
        archives = list(staging.glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"mvn could not fetch {_ARTIFACT} (exit {result.returncode}; is Maven Central "
                f"reachable?):\n{result.stdout[-3000:]}"
            )
        with tarfile.open(archives[0]) as tar:
            tar.extractall(staging, filter="data")
        archives[0].unlink()
        if not (staging / "quarkus-run.jar").is_file():
            raise RuntimeError(f"{_ARTIFACT} holds no quarkus-run.jar")
        try:
            staging.rename(home)
        except OSError:
            if (home / "quarkus-run.jar").is_file():
                return home  # another process finished first
            shutil.rmtree(home)
            staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


_LIVE: set[subprocess.Popen[bytes]] = set()


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _LIVE.discard(proc)


@atexit.register
def _reap() -> None:
    for proc in list(_LIVE):
        _stop(proc, 10)


class LocalRegistry:
    """One Apicurio Registry JVM on 127.0.0.1:``port`` (in-memory storage)."""

    def __init__(
        self, port: int, *, log_path: Path | None = None, home: Path | None = None
    ) -> None:
        self.port = port
        self.management_port = free_port()
        self.home = home
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Confluent-compatible API, what ``HOTSWAP_SCHEMA_REGISTRY_URL`` takes."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ready(self) -> bool:
        """True when the Confluent API answers (``GET /subjects``)."""
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout: float = 120) -> None:
        """Start the registry; return once it answers. RuntimeError with its log if not."""
        if self.is_running():
            return
        home = fetch(self.home)
        command = [
            java_21(),
            *_JVM_OPTIONS,
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.management.host=127.0.0.1",
            f"-Dquarkus.management.port={self.management_port}",
            "-jar",
            "quarkus-run.jar",
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                command, cwd=home, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        finally:
            if self.log_path:
                log.close()  # type: ignore[union-attr]
        _LIVE.add(self._proc)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                code = self._proc.poll()
                self.stop()
                tail = self.log_path.read_text()[-3000:] if self.log_path else ""
                raise RuntimeError(f"Apicurio Registry did not start (exit {code}):\n{tail}")
            time.sleep(0.3)

    def stop(self, timeout: float = 20) -> None:
        if self._proc is not None:
            _stop(self._proc, timeout)
            self._proc = None

    def __enter__(self) -> LocalRegistry:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download and unpack the assembly; print its folder")
    run = sub.add_parser("run", help="run a registry until Ctrl-C / SIGTERM")
    run.add_argument("--port", type=int, default=8081)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch())
        return 0
    registry = LocalRegistry(args.port)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    with registry:
        print(f"Apicurio Registry {APICURIO_VERSION}: {registry.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while registry.is_running():
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
