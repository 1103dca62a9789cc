"""A secured broker, for real: SASL_SSL (SCRAM-SHA-512 over TLS) with ACLs on.

Every client runs as a principal holding exactly the ACLs the README lists for
its role (``service.kafka.acls``, checked against the README in
tests/docs/test_readme.py): the worker (exactly_once, so its transactional id
is exercised), every CLI command that talks to Kafka, and one that talks to the
worker. A principal missing one right is told, in one line, which operation on
which resource was refused: the CLI exits 1; the worker answers 503 on /ready
with that line, logs it, stays up, and scores once the ACL is added.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from scripts.harness import WorkerProcess, consume, isolated_settings, run_cli, wait_for
from scripts.localkafka import LocalKafka, free_port
from service.core.settings import Settings
from service.kafka.acls import Acl, Role, grant, role_acls

pytestmark = pytest.mark.integration

Principal = Callable[..., Settings]


@pytest.fixture
def admin(secure_kafka: LocalKafka, tmp_path: Path) -> Settings:
    """This test's topics, created by the admin (the roles have no CREATE right)."""
    settings = isolated_settings(secure_kafka.bootstrap, tmp_path, "sec")
    as_admin = _secured(secure_kafka, settings, "admin", secure_kafka.admin_password)
    assert "topics ready" in _ok(as_admin, "topics")
    return settings


def _secured(kafka: LocalKafka, settings: Settings, user: str, password: str) -> Settings:
    """``settings`` (same topics and group) for ``user`` on the SASL_SSL listener."""
    return settings.model_copy(
        update={
            "broker": f"kafka://{kafka.secure_bootstrap}",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password": SecretStr(password),
            "ssl_cafile": str(kafka.ca_file),
            "http_port": free_port(),
            "data_dir": str(Path(settings.data_dir).with_name(f"worker-{user}")),
            "log_level": "INFO",
        }
    )


@pytest.fixture
def principal(secure_kafka: LocalKafka, admin: Settings) -> Principal:
    """A new SCRAM user with ``role``'s ACLs (less ``without``), and its client settings."""

    def make(role: Role, *, without: Callable[[Acl], bool] = lambda acl: False) -> Settings:
        name = f"{role}-{uuid.uuid4().hex[:6]}"
        password = uuid.uuid4().hex
        secure_kafka.add_user(name, password)
        acls = [acl for acl in role_acls(admin, role) if not without(acl)]
        grant(secure_kafka.bootstrap, f"User:{name}", acls)
        return _secured(secure_kafka, admin, name, password)

    return make


def _ok(settings: Settings, *args: str) -> str:
    result = run_cli(settings, *args, check=False)
    assert result.returncode == 0, f"hotswap {args[0]} failed: {result.stderr}"
    return result.stdout


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused command (exit 1)."""
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _scored(admin: Settings, count: int) -> set[str]:
    records = consume(admin, admin.scored_topic, until=lambda rs: len(rs) >= count)
    return {r.json()["id"] for r in records}


def test_every_role_works_with_exactly_its_acls(
    principal: Principal,
    admin: Settings,
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    publisher = principal("publisher")
    producer = principal("producer")
    worker_settings = principal("worker").model_copy(
        update={"processing_guarantee": "exactly_once"}
    )
    assert admin.model_topic == publisher.model_topic == worker_settings.model_topic
    model = str(trained["wine-logreg"])

    assert "published wine version 1" in _ok(
        publisher, "publish", model, "--name", "wine", "--version", "1"
    )
    worker = workers(worker_settings)
    worker.wait_ready(timeout=120)
    assert "sent 20 records" in _ok(producer, "produce", "--count", "20", "--id-prefix", "a")
    assert len(_scored(admin, 20)) == 20

    _ok(publisher, "publish", model, "--name", "wine", "--version", "2", "--shadow")
    assert "promoted" in _ok(publisher, "promote", "wine")
    _ok(publisher, "publish", model, "--name", "wine", "--version", "3", "--shadow")
    assert "aborted" in _ok(publisher, "abort", "wine")
    assert "version 1 is current again" in _ok(publisher, "rollback", "wine", "--to", "1")
    wait_for(lambda: worker.model_version("wine") == "1", 60, "v1 after the rollback")
    assert "compared" in _ok(publisher, "backtest", model, "--name", "wine", "--count", "10")
    assert "wine" in _ok(publisher, "status", "--url", worker.url)
    assert "replayed 0 dead letters" in _ok(producer, "replay-dlq")
    _ok(producer, "produce", "--count", "10", "--id-prefix", "b")
    assert len(_scored(admin, 30)) == 30


def test_a_missing_right_is_named_in_one_line(
    principal: Principal,
    admin: Settings,
    workers: Callable[[Settings], WorkerProcess],
    secure_kafka: LocalKafka,
    trained: dict[str, Path],
) -> None:
    model = str(trained["wine-logreg"])
    no_write = principal("publisher", without=lambda a: a.operation == "WRITE")
    user = no_write.sasl_username
    line = _refused(
        run_cli(no_write, "publish", model, "--name", "wine", "--version", "1", check=False)
    )
    assert line == f"error: not authorized to WRITE topic '{admin.archive_topic}' as User:{user}"

    full = principal("publisher")
    _ok(full, "publish", model, "--name", "wine", "--version", "1")
    _ok(full, "publish", model, "--name", "wine", "--version", "2", "--shadow")
    no_read = principal(
        "publisher", without=lambda a: a.name == admin.control_topic and a.operation == "READ"
    )
    line = _refused(run_cli(no_read, "promote", "wine", check=False))
    assert line == (
        f"error: not authorized to READ topic '{admin.control_topic}' "
        f"as User:{no_read.sasl_username}"
    )

    # No right at all on the data topic: it is hidden, so produce tries to create it.
    mute = principal("producer", without=lambda a: a.operation == "WRITE")
    line = _refused(run_cli(mute, "produce", "--count", "1", check=False))
    assert line == (
        f"error: not authorized to CREATE topic '{admin.data_topic}' as User:{mute.sasl_username}"
    )

    # The worker: no READ on the model topic, no WRITE on the scored topic (only DESCRIBE,
    # or it would take the topic for absent). Up, not ready, says why; fine once granted.
    blind = principal(
        "worker",
        without=lambda a: (
            (a.name, a.operation) in {(admin.model_topic, "READ"), (admin.scored_topic, "WRITE")}
        ),
    )
    user, root = f"User:{blind.sasl_username}", secure_kafka.bootstrap
    grant(root, user, [Acl("topic", admin.scored_topic, "DESCRIBE", "test")])
    worker = workers(blind)
    _refused_in_ready(worker, f"not authorized to READ topic '{admin.model_topic}' as {user}")
    grant(root, user, [Acl("topic", admin.model_topic, "READ", "granted late")])
    worker.wait_ready(timeout=90)

    # exactly_once without its transactional id: the same, instead of a crash loop.
    eos = principal("worker", without=lambda a: a.resource == "transactional_id").model_copy(
        update={"processing_guarantee": "exactly_once", "app_id": f"{admin.app_id}-eos"}
    )
    # (its own group, so it does not share the data partitions with the worker above)
    own = [
        Acl("group", eos.app_id, "READ", ""),
        Acl("group", f"{eos.app_id}-reader", "DESCRIBE", ""),
    ]
    grant(root, f"User:{eos.sasl_username}", own)
    other = workers(eos)
    tid = f"{eos.app_id}-{eos.worker_id}"
    txn = f"not authorized to WRITE transactional id '{tid}' as User:{eos.sasl_username}"
    _refused_in_ready(other, txn)
    grant(root, f"User:{eos.sasl_username}", [Acl("transactional_id", tid, "WRITE", "late")])
    other.wait_ready(timeout=90)
    other.stop()

    _ok(principal("producer"), "produce", "--count", "5", "--id-prefix", "late")
    _refused_in_ready(worker, f"not authorized to WRITE topic '{admin.scored_topic}' as {user}")
    grant(root, user, [Acl("topic", admin.scored_topic, "WRITE", "granted late")])
    worker.wait_ready(timeout=90)
    assert len(_scored(admin, 5)) == 5
    dead = consume(admin, admin.dead_letter_topic, until=lambda rs: False, timeout=2)
    assert dead == [], "a missing ACL is not the records' fault: nothing is dead-lettered"


def _refused_in_ready(worker: WorkerProcess, denial: str) -> None:
    """/ready answers 503 naming ``denial``, the log says it, and the worker stays up."""

    def refused() -> bool:
        answer = worker.get("/ready")
        return answer.status_code == 503 and denial in answer.json()["reason"]

    wait_for(refused, 90, f"/ready saying {denial!r}")
    assert worker.proc is not None
    assert worker.proc.poll() is None, "the worker must stay up"
    wait_for(lambda: denial in worker.tail(400), 30, "the log naming the refused right")
