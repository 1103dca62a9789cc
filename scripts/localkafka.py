"""Fetch Apache Kafka's jars from Maven Central and run a real single-node KRaft broker.

Why this exists: the tests, the demo and the benchmarks need a real Kafka broker, not a
mock, and must get one on a machine with no Docker engine and no distro package. Maven
resolves ``org.apache.kafka:kafka_2.13`` and its runtime dependencies
(``deploy/kafka/pom.xml``) once into ``.cache/``, and Java 17 runs ``kafka.Kafka`` from
them. It is stdlib only so it works before the project itself is installed
(``scripts/bootstrap.sh`` calls it from a bare venv).

Library use::

    with LocalKafka(free_port(), tmp_path / "kafka") as kafka:
        ...  # kafka.bootstrap == "127.0.0.1:<port>"

Command line::

    python scripts/localkafka.py fetch                      # prints the jars' directory
    python scripts/localkafka.py run --port 9092            # until Ctrl-C / SIGTERM
    python scripts/localkafka.py run --secure-port 9093 --user worker:secret
        # also SASL_SSL (SCRAM-SHA-512, TLS, ACLs on); CA in <data-dir>/tls/ca.pem
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import os
import random
import re
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
from types import FrameType, TracebackType

__all__ = ["KAFKA_VERSION", "REPO", "LocalKafka", "fetch", "free_port", "kafka_home"]

KAFKA_VERSION = "3.9.1"
REPO = Path(__file__).resolve().parent.parent
POM = REPO / "deploy" / "kafka" / "pom.xml"
LOG4J = REPO / "deploy" / "kafka" / "log4j.properties"
DEFAULT_DATA_DIR = REPO / ".cache" / "kafka-data"

_KAFKA_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
# Heap for one test broker: enough for the tests and benchmarks, small enough that a
# laptop can run a few at once (the integration tests start more than one).
_JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def kafka_home() -> Path:
    """Where the jars live: ``$HOTSWAP_KAFKA_HOME`` or ``.cache/kafka-<version>``.

    The version is part of the default path so a version bump fetches anew instead of
    mixing old and new jars on one classpath.
    """
    override = os.environ.get("HOTSWAP_KAFKA_HOME")
    return Path(override) if override else REPO / ".cache" / f"kafka-{KAFKA_VERSION}"


def _require(tool: str) -> str:
    """The absolute path of ``tool``, or a RuntimeError saying what to install."""
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(
            f"`{tool}` not found on PATH: the local Kafka broker needs Java 17 (java) "
            "and Maven (mvn) to fetch its jars from Maven Central"
        )
    return found


def fetch(home: Path | None = None) -> Path:
    """Download Kafka's jars once and return the ``libs`` directory holding them.

    Idempotent and cheap when the jars are already there, so every caller may call it.
    Maven writes into a temporary sibling directory that is renamed into place only when
    complete: an interrupted download never leaves a half-filled ``libs`` that later runs
    would mistake for a finished one, and concurrent fetches (parallel test sessions)
    cannot clobber each other.
    """
    home = Path(home) if home is not None else kafka_home()
    libs = home / "libs"
    if (libs / _KAFKA_JAR).is_file():
        return libs
    mvn = _require("mvn")
    _require("java")
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=home))
    print(f"fetching Kafka {KAFKA_VERSION}'s jars with Maven into {libs} ...", file=sys.stderr)
    try:
        result = subprocess.run(
            [
                mvn, "-q", "-B", "-f", str(POM),
                f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0 or not (staging / _KAFKA_JAR).is_file():
            raise RuntimeError(
                f"mvn could not fetch Kafka {KAFKA_VERSION} (exit {result.returncode}; "
                f"is Maven Central reachable?):\n{_tail(result.stdout)}"
            )
        try:
            staging.rename(libs)
        except OSError:
            if (libs / _KAFKA_JAR).is_file():
                return libs  # another process finished first; its jars are as good
            shutil.rmtree(libs)  # an unusable leftover: replace it
            staging.rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


_PICK = random.SystemRandom()  # not the global generator, which tests may seed alike
_GIVEN: set[int] = set()  # handed out by this process: never twice (two servers, one port)


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (Linux; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now, for a server to bind.

    Picked at random below the kernel's ephemeral range, not by binding port 0: the OS
    picks that one from the ephemeral range, which every outgoing connection (a Kafka
    client's, a test's) draws from too, so between this call and the server's bind a
    client could take it (seen: a worker's HTTP bind failed with "address already in
    use" in a full test run). Falls back to the OS's pick if no port below is free.
    """
    low, _ = _ephemeral_range()
    if low > 11_000:
        for _ in range(200):
            port = _PICK.randrange(10_000, low)
            if port in _GIVEN:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                _GIVEN.add(port)
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    """True when something listens on 127.0.0.1:``port``.

    Checked before starting so that a port taken by another broker fails fast instead of
    that other broker answering our readiness probe. SO_REUSEADDR as the JVM sets it, so
    connections of a just-stopped broker lingering in TIME_WAIT do not count.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _api_versions_ok(port: int, timeout: float = 2.0) -> bool:
    """True when 127.0.0.1:``port`` answers a Kafka ApiVersions v0 request correctly.

    An open TCP port is not enough: the socket is bound before the broker can serve
    requests. A KRaft broker only processes requests once it is registered with the
    controller and unfenced, so a well-formed answer means clients can use it now.
    """
    api_key, api_version, correlation_id = 18, 0, 0x4B41464B  # ApiVersions v0, "KAFK"
    client_id = b"hotswap-localkafka"
    body = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id))
    request = struct.pack(">i", len(body) + len(client_id)) + body + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(request)
            size_bytes = _recv_exactly(conn, 4)
            (size,) = struct.unpack(">i", size_bytes)
            if not 10 <= size <= 1 << 20:
                return False
            payload = _recv_exactly(conn, size)
    except (OSError, EOFError):
        return False
    # Response v0: correlation_id int32, error_code int16, [api_key, min, max] (int16 each).
    correlation: int
    error: int
    count: int
    correlation, error, count = struct.unpack(">ihi", payload[:10])
    return correlation == correlation_id and error == 0 and 0 < count == (size - 10) // 6


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``conn``; EOFError if the peer closes first."""
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def _tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a tool's output, without terminal color codes."""
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[-lines:])


def _cluster_id() -> str:
    """A random Kafka cluster id: a UUID as unpadded URL-safe base64 (22 characters).

    Like Kafka's own ``Uuid.randomUuid()`` it never starts with ``-``, which StorageTool's
    argument parser would take for an option (otherwise 1 format in 64 would fail).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# Brokers started by this interpreter and not yet stopped; reaped at exit so that a test
# run or script that dies on an exception does not leave JVMs holding ports behind.
_LIVE: set[subprocess.Popen[bytes]] = set()


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the broker's process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes], timeout: float | None) -> None:
    """SIGTERM (Kafka's controlled shutdown), then SIGKILL after ``timeout`` seconds.

    ``timeout=None`` sends SIGKILL straight away: a crash, with no shutdown hooks run.
    """
    if timeout is not None and proc.poll() is None:
        _signal(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    if proc.poll() is None:
        _signal(proc, signal.SIGKILL)
        proc.wait()
    _LIVE.discard(proc)


@atexit.register
def _reap() -> None:
    for proc in list(_LIVE):
        _terminate(proc, timeout=10)


class LocalKafka:
    """One KRaft broker+controller JVM on 127.0.0.1, with its own data directory.

    ``data_dir`` holds ``server.properties``, the partitions (``logs/``) and, unless
    ``log_path`` says otherwise, the broker's output (``kafka.log``, appended to across
    restarts). Storage is formatted only on the first start, so ``stop()`` then
    ``start()`` on the same ``data_dir`` is a real broker restart that keeps every topic
    and record: that is what the fault-tolerance tests rely on.

    ``extra_config`` entries are added to (or override) the generated broker config.
    ``home`` is where the jars are fetched (see ``kafka_home()``).
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
        secure_port: int | None = None,
        admin_password: str = "admin-secret",
    ) -> None:
        self.port = port
        # A SASL_SSL listener (SCRAM-SHA-512 over TLS) with ACLs on, beside PLAINTEXT.
        self.secure_port = secure_port
        self.admin_password = admin_password
        # Chosen once, so every restart of this broker reuses the same controller endpoint.
        self.controller_port = controller_port if controller_port is not None else free_port()
        self.data_dir = Path(data_dir).absolute()
        self.extra_config = dict(extra_config or {})
        self.home = home
        self.log_path = Path(log_path).absolute() if log_path else self.data_dir / "kafka.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients' ``bootstrap_servers``."""
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """``host:port`` of the SASL_SSL listener (only with ``secure_port``)."""
        if self.secure_port is None:
            raise RuntimeError("this broker has no SASL_SSL listener (secure_port not given)")
        return f"localhost:{self.secure_port}"

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the SASL_SSL listener's certificate."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid(self) -> int | None:
        """The broker JVM's process id while it runs (its process group id too)."""
        return self._proc.pid if self.is_running() and self._proc else None

    def config(self) -> dict[str, str]:
        """The broker configuration ``start()`` writes to ``server.properties``."""
        cport = self.controller_port
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            # One node: every internal topic has to make do with a single replica.
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            # Consumers join at once instead of after 3 s; tests create their topics.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # Compacted topics (the model topic) get compacted soon in a short run, with
            # a small dedupe buffer instead of the default 128 MiB of heap.
            "log.cleaner.backoff.ms": "1000",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            # Model artifacts travel as records: allow up to 16 MiB.
            "message.max.bytes": str(16 * 1024 * 1024),
        }
        if self.secure_port is not None:
            config.update(self._secure_config())
        config.update(self.extra_config)
        return config

    def _secure_config(self) -> dict[str, str]:
        """A SASL_SSL listener with SCRAM-SHA-512 over TLS, and ACLs enforced.

        The PLAINTEXT listener stays for the broker's own traffic and the local operator:
        on it every client is ``User:ANONYMOUS``, a super user like ``User:admin``, so
        it is an admin door on loopback only. Everyone else comes in on SASL_SSL as a
        SCRAM user and gets exactly the ACLs granted to it.
        """
        cport, sport = self.controller_port, self.secure_port
        tls = self.data_dir / "tls"
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},SASL_SSL://127.0.0.1:{sport},"
                f"CONTROLLER://127.0.0.1:{cport}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},SASL_SSL://localhost:{sport}"
            ),
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL"
            ),
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            # PEM inline (Properties turns each \n back into a line break): no keystore
            # file format, no keystore password; the key is unencrypted, readable only by us.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.certificate.chain": _one_line(tls / "server.pem"),
            "ssl.keystore.key": _one_line(tls / "server.key"),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:admin;User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _java(self, libs: Path, main_class: str, *args: str) -> list[str]:
        return [
            _require("java"),
            *_JVM_OPTIONS,
            f"-Dlog4j.configuration={LOG4J.as_uri()}",
            "-cp",
            f"{libs}{os.sep}*",
            main_class,
            *args,
        ]

    def _format_storage(self, libs: Path, config: dict[str, str]) -> None:
        """Format the log directories unless every one of them already is.

        Formatting again would fail (or, forced, wipe the cluster's identity), so a
        restart must skip it; a directory that is missing ``meta.properties`` (a new
        entry in ``log.dirs``) is formatted with the existing cluster id.
        """
        dirs = [Path(d) for d in config["log.dirs"].split(",")]
        if "metadata.log.dir" in config:
            dirs.append(Path(config["metadata.log.dir"]))
        metas = [d / "meta.properties" for d in dirs]
        if all(m.is_file() for m in metas):
            return
        cluster = next((_read_cluster_id(m) for m in metas if m.is_file()), None)
        # Static quorum (controller.quorum.voters), so no --standalone: in 3.9 that flag
        # is for dynamic quorums and is rejected alongside controller.quorum.voters.
        result = subprocess.run(
            self._java(
                libs,
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(self.config_path),
                f"--cluster-id={cluster or _cluster_id()}",
                "--ignore-formatted",
                *self._scram_arguments(),
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"formatting Kafka storage in {self.data_dir} failed "
                f"(exit {result.returncode}):\n{_tail(result.stdout)}"
            )

    def _scram_arguments(self) -> list[str]:
        """The admin's SCRAM credential, written into the cluster's first metadata."""
        if self.secure_port is None:
            return []
        return ["--add-scram", f"SCRAM-SHA-512=[name=admin,password={self.admin_password}]"]

    def start(self, timeout: float = 60) -> None:
        """Start the broker; return once it answers Kafka requests on ``bootstrap``.

        A no-op if it is already running. Raises RuntimeError, with the end of the
        broker's log, if the JVM exits during startup or is not ready within ``timeout``
        seconds (it is killed then), or if a port is already taken.
        """
        if self.is_running():
            return
        libs = fetch(self.home)
        for port in (self.port, self.controller_port):
            if _port_in_use(port):
                raise RuntimeError(f"cannot start Kafka: 127.0.0.1:{port} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.secure_port is not None:
            if _port_in_use(self.secure_port):
                raise RuntimeError(
                    f"cannot start Kafka: 127.0.0.1:{self.secure_port} is already in use"
                )
            make_tls_files(self.data_dir / "tls")
        config = self.config()
        self.config_path.write_text(
            "# Written by scripts/localkafka.py on every start; edits are overwritten.\n"
            + "".join(f"{key}={value}\n" for key, value in config.items())
        )
        self._format_storage(libs, config)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(
                f"--- localkafka: starting Kafka {KAFKA_VERSION} at {time.ctime()}\n".encode()
            )
            log.flush()
            log_start = log.tell()
            self._proc = subprocess.Popen(
                self._java(libs, "kafka.Kafka", str(self.config_path)),
                cwd=self.data_dir,  # where a JVM crash file (hs_err_pid*.log) lands
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal is for us, not the JVM
            )
        _LIVE.add(self._proc)
        try:
            self._wait_ready(self._proc, timeout, log_start)
        except BaseException:
            self.kill()  # also on KeyboardInterrupt: never leave a half-started JVM
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float, log_start: int) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Kafka exited with code {proc.returncode} during startup "
                    f"(log: {self.log_path}):\n{self._log_tail(log_start)}"
                )
            if _api_versions_ok(self.port, timeout=1.0) and proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Kafka was not ready within {timeout:g}s (log: {self.log_path}):\n"
                    f"{self._log_tail(log_start)}"
                )
            time.sleep(0.1)

    def _log_tail(self, offset: int = 0) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return _tail(log.read().decode(errors="replace"))
        except OSError:
            return "(no log)"

    def add_user(self, name: str, password: str, timeout: float = 30) -> None:
        """Create (or reset) the SCRAM-SHA-512 credential of ``name`` on the running broker.

        Through the PLAINTEXT listener (the local admin door), with confluent-kafka's
        admin client, imported here only: the plaintext broker needs no package.
        """
        from confluent_kafka.admin import (  # type: ignore[attr-defined]
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        upsert = UserScramCredentialUpsertion(name, info, password.encode())
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL if it takes longer than ``timeout`` s.

        Safe to call when not running. The data directory is kept for a later start().
        """
        if self._proc is not None:
            _terminate(self._proc, timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL, like a crashed machine: no controlled shutdown, data dir kept."""
        if self._proc is not None:
            _terminate(self._proc, timeout=None)
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

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"LocalKafka({self.bootstrap}, {self.data_dir}, {state})"


def _one_line(pem: Path) -> str:
    """A PEM file as one ``server.properties`` value: line breaks written as ``\\n``."""
    if not pem.is_file():
        return ""  # config() before the first start(): the files are made by start()
    return "\\n".join(pem.read_text().strip().splitlines())


def make_tls_files(tls: Path) -> None:
    """A CA and a server certificate for ``localhost`` and ``127.0.0.1`` (PEM), made once.

    Files: ``ca.pem`` (clients trust it: ``HOTSWAP_SSL_CAFILE``), ``server.pem`` and
    ``server.key`` (the listener's). Kept across restarts so clients' CA file stays
    valid. Needs the ``cryptography`` package (a dependency of hotswap), imported here
    only, so the plaintext broker still runs from a bare interpreter.
    """
    if all((tls / name).is_file() for name in ("ca.pem", "server.pem", "server.key")):
        return
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650))

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("hotswap local CA"))
        .issuer_name(name("hotswap local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    tls.mkdir(parents=True, exist_ok=True)
    key_path = tls / "server.key"
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    (tls / "server.pem").write_bytes(server.public_bytes(pem) + ca.public_bytes(pem))
    (tls / "ca.pem").write_bytes(ca.public_bytes(pem))


def _read_cluster_id(meta: Path) -> str | None:
    for line in meta.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cluster.id":
            return value.strip()
    return None


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(
    port: int,
    data_dir: Path,
    controller_port: int | None,
    timeout: float,
    secure_port: int | None = None,
    users: list[str] | None = None,
) -> int:
    """Run a broker in the foreground until SIGINT/SIGTERM, then stop it cleanly."""
    # Both set explicitly: a process started in the background by a shell inherits SIGINT
    # as ignored, and Python then never raises KeyboardInterrupt for it.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill <pid>` stops cleanly too
    broker = LocalKafka(port, data_dir, controller_port=controller_port, secure_port=secure_port)
    try:
        broker.start(timeout)
        for user in users or []:
            name, _, password = user.partition(":")
            broker.add_user(name, password)
        if secure_port is not None:
            print(
                f"SASL_SSL (SCRAM-SHA-512, ACLs on) at {broker.secure_bootstrap}, "
                f"CA {broker.ca_file}; super user admin; users: "
                f"{', '.join(u.partition(':')[0] for u in users or []) or 'none added'}",
                flush=True,
            )
        print(
            f"Kafka {KAFKA_VERSION} ready at {broker.bootstrap} "
            f"(data in {broker.data_dir}, log in {broker.log_path}); Ctrl-C stops it",
            flush=True,
        )
        while broker.is_running():
            time.sleep(0.5)
        print(f"Kafka exited on its own; see {broker.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not abort the controlled shutdown half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if broker.is_running():
            print("stopping Kafka ...", file=sys.stderr, flush=True)
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="localkafka",
        description=f"Fetch and run a real single-node Apache Kafka {KAFKA_VERSION} (KRaft).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download Kafka's jars (once) and print their directory")
    run = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C / SIGTERM")
    run.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    run.add_argument(
        "--controller-port", type=int, default=None, help="KRaft controller port (default: free)"
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="config, partitions and log; reused across runs (default .cache/kafka-data)",
    )
    run.add_argument("--timeout", type=float, default=60, help="startup timeout in seconds")
    run.add_argument(
        "--secure-port",
        type=int,
        default=None,
        help="also listen for SASL_SSL (SCRAM-SHA-512 over TLS) here, with ACLs on",
    )
    run.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="a SCRAM-SHA-512 user to create (repeatable; with --secure-port)",
    )
    args = parser.parse_args(argv)
    if args.command == "run" and args.user and args.secure_port is None:
        parser.error("--user needs --secure-port")
    try:
        if args.command == "fetch":
            print(fetch())
            return 0
        return _run(
            args.port,
            args.data_dir,
            args.controller_port,
            args.timeout,
            args.secure_port,
            args.user,
        )
    except RuntimeError as exc:
        print(f"localkafka: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
