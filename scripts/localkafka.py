"""Fetch Apache Kafka's jars from Maven Central and run a real single-node KRaft broker.

No Docker engine and no distro package is needed: Maven resolves
``org.apache.kafka:kafka_2.13`` and its dependencies (``deploy/kafka/pom.xml``)
and Java 17 runs ``kafka.Kafka``. Used by the demo, the tests and the
benchmarks; stdlib only, so it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

__all__ = ["KAFKA_VERSION", "LocalKafka", "fetch", "free_port"]

KAFKA_VERSION = "3.9.1"
REPO = Path(__file__).resolve().parent.parent
POM = REPO / "deploy" / "kafka" / "pom.xml"
LOG4J = REPO / "deploy" / "kafka" / "log4j.properties"


def kafka_home() -> Path:
    return Path(os.environ.get("HOTSWAP_KAFKA_HOME") or REPO / ".cache" / f"kafka-{KAFKA_VERSION}")


def fetch(home: Path | None = None) -> Path:
    """Download the broker's jars once (idempotent); return the directory holding them."""
    home = home or kafka_home()
    libs = home / "libs"
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return libs
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: Kafka's jars need Java 17 and Maven")
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
    subprocess.run(
        [
            "mvn", "-q", "-B", "-f", str(POM),
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )  # fmt: skip
    if libs.exists():
        shutil.rmtree(libs)
    staging.rename(libs)
    return libs


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api_versions_ok(port: int, timeout: float = 2.0) -> bool:
    """Send a Kafka ApiVersions v0 request; True when a well-formed answer comes back."""
    client = b"hotswap-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(struct.pack(">i", len(body)) + body)
            header = conn.recv(4)
            if len(header) < 4:
                return False
            (size,) = struct.unpack(">i", header)
            payload = b""
            while len(payload) < size:
                chunk = conn.recv(size - len(payload))
                if not chunk:
                    return False
                payload += chunk
            correlation, error = struct.unpack(">ih", payload[:6])
            return bool(correlation == 7 and error == 0)
    except OSError:
        return False


class LocalKafka:
    """One KRaft broker+controller process on loopback, with its own data directory.

    ``stop()`` then ``start()`` on the same ``data_dir`` is a real broker restart:
    storage is formatted only once.
    """

    def __init__(
        self,
        port: int,
        data_dir: Path,
        *,
        controller_port: int | None = None,
        extra_config: dict[str, str] | None = None,
        home: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port
        self.controller_port = controller_port or free_port()
        self.data_dir = Path(data_dir)
        self.extra_config = extra_config or {}
        self.home = home
        self.log_path = log_path or self.data_dir / "kafka.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.cleaner.backoff.ms": "1000",
            "message.max.bytes": str(16 * 1024 * 1024),
            **self.extra_config,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        return path

    def _java(self, *args: str, **kwargs: object) -> list[str]:
        libs = fetch(self.home)
        return [
            "java",
            "-Xms256m",
            "-Xmx512m",
            f"-Dlog4j.configuration=file:{LOG4J}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def start(self, timeout: float = 60) -> None:
        """Start the broker and wait until it answers Kafka requests."""
        config = self._write_config()
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._java("kafka.Kafka", str(config)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with {self._proc.returncode}:\n{self._tail()}")
            if _api_versions_ok(self.port):
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"Kafka not ready within {timeout}s:\n{self._tail()}")

    def _tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL if it takes longer than ``timeout``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download Kafka's jars (once)")
    run = sub.add_parser("run", help="run a broker until Ctrl-C")
    run.add_argument("--port", type=int, default=9092)
    run.add_argument("--data-dir", type=Path, default=REPO / ".cache" / "kafka-data")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch())
        return 0
    broker = LocalKafka(args.port, args.data_dir)
    broker.start()
    print(
        f"Kafka {KAFKA_VERSION} ready at {broker.bootstrap} (data in {args.data_dir})", flush=True
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping and broker.is_running():
            time.sleep(0.5)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
